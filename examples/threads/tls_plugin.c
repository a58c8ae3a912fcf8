/* A library with __thread data, dlopen'ed by thread_locals (mode dlopen):
 * its TLS is dynamic (general-dynamic model, through __tls_get_addr). */
static __thread int plugin_counter;

int plugin_bump(void) { return ++plugin_counter; }
