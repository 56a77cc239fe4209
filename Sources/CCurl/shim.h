// Typed wrappers around libcurl's variadic setopt/getinfo calls, which Swift cannot call directly.
#ifndef CHATBATCH_CCURL_SHIM_H
#define CHATBATCH_CCURL_SHIM_H
#include <curl/curl.h>
#include <stdint.h>
#ifdef __linux__
#include <sys/epoll.h>
#endif

typedef size_t (*cb_curl_data_callback)(char *buffer, size_t size, size_t nitems, void *userdata);

static inline CURLcode cb_curl_easy_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode cb_curl_easy_setopt_off(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode cb_curl_easy_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode cb_curl_easy_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode cb_curl_easy_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode cb_curl_easy_setopt_callback(CURL *handle, CURLoption option, cb_curl_data_callback value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode cb_curl_easy_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}
static inline CURLcode cb_curl_easy_getinfo_off(CURL *handle, CURLINFO info, curl_off_t *value) {
    return curl_easy_getinfo(handle, info, value);
}
static inline CURLcode cb_curl_easy_getinfo_pointer(CURL *handle, CURLINFO info, void **value) {
    return curl_easy_getinfo(handle, info, value);
}
static inline CURLMcode cb_curl_multi_setopt_long(CURLM *handle, CURLMoption option, long value) {
    return curl_multi_setopt(handle, option, value);
}
static inline CURLMcode cb_curl_multi_setopt_pointer(CURLM *handle, CURLMoption option, void *value) {
    return curl_multi_setopt(handle, option, value);
}
static inline CURLMcode cb_curl_multi_setopt_socketfunction(CURLM *handle, curl_socket_callback value) {
    return curl_multi_setopt(handle, CURLMOPT_SOCKETFUNCTION, value);
}
static inline CURLMcode cb_curl_multi_setopt_timerfunction(CURLM *handle, curl_multi_timer_callback value) {
    return curl_multi_setopt(handle, CURLMOPT_TIMERFUNCTION, value);
}

#ifdef __linux__
// epoll, for the transport loop on Linux (epoll_event is packed, so Swift gets plain ints).
// Elsewhere the loop uses curl_multi_poll, which needs nothing from here.
static const uint32_t cb_EPOLLIN = EPOLLIN;
static const uint32_t cb_EPOLLOUT = EPOLLOUT;
static const uint32_t cb_EPOLLERR = EPOLLERR;
static const uint32_t cb_EPOLLHUP = EPOLLHUP;

static inline int cb_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

static inline int cb_epoll_ctl(int ep, int op, int fd, uint32_t events) {
    struct epoll_event ev = {0};
    ev.events = events;
    ev.data.fd = fd;
    return epoll_ctl(ep, op, fd, &ev);
}
static inline int cb_epoll_add(int ep, int fd, uint32_t events) { return cb_epoll_ctl(ep, EPOLL_CTL_ADD, fd, events); }
static inline int cb_epoll_mod(int ep, int fd, uint32_t events) { return cb_epoll_ctl(ep, EPOLL_CTL_MOD, fd, events); }
static inline int cb_epoll_del(int ep, int fd) { return cb_epoll_ctl(ep, EPOLL_CTL_DEL, fd, 0); }

/// Waits for up to `max` (at most 256) events; writes each one's fd and event bits.
static inline int cb_epoll_wait(int ep, int *fds, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(ep, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) { fds[i] = evs[i].data.fd; events[i] = evs[i].events; }
    return n;
}
#endif /* __linux__ */
#endif
