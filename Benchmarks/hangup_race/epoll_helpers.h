/* Benchmarks/hangup_race/race.swift's epoll set per loop (-D OWN_EPOLL), passed to swiftc
   with -import-objc-header. `struct epoll_event` is packed on x86-64, which Swift cannot lay
   out; these take and give its two fields apart (as Sources/CSystemShims' mailswitch_epoll_*
   functions do for the daemon). */
#ifndef RACE_EPOLL_HELPERS_H
#define RACE_EPOLL_HELPERS_H

#include <stdint.h>

typedef struct {
    uint32_t events;
    uint64_t key;
} race_readiness;

enum {
    RACE_READABLE = 0x001,     /* EPOLLIN */
    RACE_READ_HANGUP = 0x2000  /* EPOLLRDHUP */
};

enum {
    RACE_CTL_ADD = 1,
    RACE_CTL_DEL = 2
};

/* epoll_create1(EPOLL_CLOEXEC) */
int race_epoll_create(void);
int race_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t key);
/* Never blocks (timeout 0); returns the count, or -1 with errno. */
int race_epoll_poll(int epfd, race_readiness *ready, int capacity);

#endif
