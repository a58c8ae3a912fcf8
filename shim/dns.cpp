// Name resolution. glibc's resolver talks to DNS servers through its own
// internal calls, which no interposer sees, so a lookup would stall the one
// OS thread. Each call here runs on the runtime's pool of helper threads
// (Hub::run_blocking, like gevent's default threadpool resolver) while the
// calling greenlet parks. Results are glibc's own: same files, same nsswitch,
// same /etc/hosts handling (c-ares would differ there).
//
// errno and h_errno are per thread: the ones the pool thread set are copied
// back to the caller. gethostbyname and friends keep their static result
// buffers, as they do with real threads.
#include <arpa/inet.h>

#include "shim.hpp"

using namespace greenshim;
using namespace greenshim::shim;

namespace {
// Runs call() on the pool; carries errno and h_errno back.
template <class Call>
auto offload(Call&& call) -> decltype(call()) {
    decltype(call()) result{};
    int err = 0, herr = 0;
    static WaitSite waiting{"a DNS lookup (helper thread)", "pool"};
    WaitScope what(waiting);
    greenshim::detail::current_hub().run_blocking([&] {
        result = call();
        err = errno;
        herr = h_errno;
    });
    errno = err;
    h_errno = herr;
    return result;
}
// A lookup glibc answers without asking anyone: the host an address literal
// (or none) and the service a port number (or none). Made in place: on the
// pool it cost a helper thread's round trip and a park per lookup, and a
// program that resolves "127.0.0.1" for each of a thousand clients had all of
// them parked at once in the middle of their requests (siege -c 1000, its
// deep frames live in each).
bool answered_in_place(const char* node, const char* service) noexcept {
    if (node) {
        unsigned char addr[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET, node, addr) != 1 && inet_pton(AF_INET6, node, addr) != 1) return false;
    }
    if (service) {
        if (!*service) return false;
        for (const char* c = service; *c; ++c)
            if (*c < '0' || *c > '9') return false;
    }
    return true;
}
// The same for getnameinfo: the host asked for as a number (or not at all)
// and the service as a number (or not at all). A server that logs each
// client's address (a PostgreSQL backend) makes one per connection.
bool named_in_place(const char* host, socklen_t hostlen, const char* serv, socklen_t servlen, int flags) noexcept {
    bool host_numeric = !host || hostlen == 0 || (flags & NI_NUMERICHOST);
    bool serv_numeric = !serv || servlen == 0 || (flags & NI_NUMERICSERV);
    return host_numeric && serv_numeric;
}
}  // namespace

SHIM_EXPORT int getaddrinfo(const char* node, const char* service, const struct addrinfo* hints,
                            struct addrinfo** res) {
    SHIM_CANCEL_POINT;
    if (!may_park() || answered_in_place(node, service)) return REAL(getaddrinfo)(node, service, hints, res);
    return offload([&] { return REAL(getaddrinfo)(node, service, hints, res); });
}

SHIM_EXPORT int getnameinfo(const struct sockaddr* sa, socklen_t salen, char* host, socklen_t hostlen, char* serv,
                            socklen_t servlen, int flags) {
    SHIM_CANCEL_POINT;
    if (!may_park() || named_in_place(host, hostlen, serv, servlen, flags))
        return REAL(getnameinfo)(sa, salen, host, hostlen, serv, servlen, flags);
    return offload([&] { return REAL(getnameinfo)(sa, salen, host, hostlen, serv, servlen, flags); });
}

SHIM_EXPORT struct hostent* gethostbyname(const char* name) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(gethostbyname)(name);
    return offload([&] { return REAL(gethostbyname)(name); });
}

SHIM_EXPORT struct hostent* gethostbyname2(const char* name, int af) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(gethostbyname2)(name, af);
    return offload([&] { return REAL(gethostbyname2)(name, af); });
}

SHIM_EXPORT struct hostent* gethostbyaddr(const void* addr, socklen_t len, int type) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(gethostbyaddr)(addr, len, type);
    return offload([&] { return REAL(gethostbyaddr)(addr, len, type); });
}

SHIM_EXPORT int gethostbyname_r(const char* name, struct hostent* ret, char* buf, size_t buflen,
                                struct hostent** result, int* h_errnop) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(gethostbyname_r)(name, ret, buf, buflen, result, h_errnop);
    return offload([&] { return REAL(gethostbyname_r)(name, ret, buf, buflen, result, h_errnop); });
}

SHIM_EXPORT int gethostbyname2_r(const char* name, int af, struct hostent* ret, char* buf, size_t buflen,
                                 struct hostent** result, int* h_errnop) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(gethostbyname2_r)(name, af, ret, buf, buflen, result, h_errnop);
    return offload([&] { return REAL(gethostbyname2_r)(name, af, ret, buf, buflen, result, h_errnop); });
}

SHIM_EXPORT int gethostbyaddr_r(const void* addr, socklen_t len, int type, struct hostent* ret, char* buf,
                                size_t buflen, struct hostent** result, int* h_errnop) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(gethostbyaddr_r)(addr, len, type, ret, buf, buflen, result, h_errnop);
    return offload([&] { return REAL(gethostbyaddr_r)(addr, len, type, ret, buf, buflen, result, h_errnop); });
}

// res_query and friends use the calling thread's _res; on the pool thread it
// is that thread's own (initialised from /etc/resolv.conf), so options a
// program set on its own _res are not seen.
SHIM_EXPORT int res_query(const char* dname, int cls, int type, unsigned char* answer, int anslen) {
    SHIM_ENTER;
    if (!may_park()) return REAL(res_query)(dname, cls, type, answer, anslen);
    return offload([&] { return REAL(res_query)(dname, cls, type, answer, anslen); });
}

SHIM_EXPORT int res_search(const char* dname, int cls, int type, unsigned char* answer, int anslen) {
    SHIM_ENTER;
    if (!may_park()) return REAL(res_search)(dname, cls, type, answer, anslen);
    return offload([&] { return REAL(res_search)(dname, cls, type, answer, anslen); });
}

SHIM_EXPORT int res_querydomain(const char* name, const char* domain, int cls, int type, unsigned char* answer,
                                int anslen) {
    SHIM_ENTER;
    if (!may_park()) return REAL(res_querydomain)(name, domain, cls, type, answer, anslen);
    return offload([&] { return REAL(res_querydomain)(name, domain, cls, type, answer, anslen); });
}
