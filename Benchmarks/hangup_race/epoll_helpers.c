// The epoll calls of Benchmarks/hangup_race/race.swift's "epoll set per loop" build
// (epoll_helpers.h says why they are in C). Built with clang and linked by
// Benchmarks/hangup_race.py for that build only.
#include <sys/epoll.h>
#include "epoll_helpers.h"

_Static_assert(RACE_READABLE == EPOLLIN && RACE_READ_HANGUP == EPOLLRDHUP, "epoll's event bits");
_Static_assert(RACE_CTL_ADD == EPOLL_CTL_ADD && RACE_CTL_DEL == EPOLL_CTL_DEL, "epoll's operations");

int race_epoll_create(void) {
    return epoll_create1(EPOLL_CLOEXEC);
}

int race_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t key) {
    struct epoll_event event = { .events = events, .data = { .u64 = key } };
    return epoll_ctl(epfd, op, fd, &event);
}

int race_epoll_poll(int epfd, race_readiness *ready, int capacity) {
    struct epoll_event events[capacity];
    int count = epoll_wait(epfd, events, capacity, 0);
    for (int i = 0; i < count; i++) {
        ready[i].events = events[i].events;
        ready[i].key = events[i].data.u64;
    }
    return count;
}
