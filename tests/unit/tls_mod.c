// A module with __thread variables, dlopen'ed by test_thread_tls.cpp: its TLS
// is dynamic (reached through __tls_get_addr and the thread's DTV).
__thread int mod_counter = 5;
__thread char mod_pad[8192];

int tls_mod_bump(void) {
    mod_pad[100]++;
    return ++mod_counter;
}

int* tls_mod_addr(void) { return &mod_counter; }
