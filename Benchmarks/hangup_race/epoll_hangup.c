// Kept only so that the benchmarks can show the old workaround: mailswitch no longer uses it
// (each event loop now owns an epoll set, watched by one Dispatch read source, and no socket
// has a Dispatch source; Sources/EventLoop/ReadinessSet.swift). Benchmarks/hangup_race.py
// links it into its "Dispatch source per socket, with the old shim" build and
// Benchmarks/relays.py into its Dispatch relay, the old design's floor. Until then it was
// Sources/CSystemShims/epoll_hangup.c, linked into the daemon; what follows is its account.
//
// libdispatch's epoll backend (swift-corelibs-libdispatch, event_epoll.c) answers an EPOLLHUP
// by marking every source on the descriptor "needs delete". Such a source is then unregistered
// by its own target queue, on a worker thread, while the manager thread may still be walking
// the same muxnote in _dispatch_event_merge_fd: the worker frees the muxnote (or finalizes the
// source a second time) under the manager's feet. mailswitch hit it as a segfault in
// _dispatch_event_loop_drain about once in 250 five-second login windows; a small Dispatch
// program that closes the far ends of socket pairs hits it within seconds
// (scripts/bench hangup-race). Compare swift-corelibs-libdispatch issue #949.
//
// A hang-up needs no path of its own: a hung-up socket reads end-of-file or an error and fails
// a write, which every handler here already takes as the end of the connection and answers by
// cancelling its sources; cancellation unregisters on the manager queue, serialized with the
// manager's own work. So these two functions, defined in the executable and therefore called
// by libdispatch instead of libc's (it must be the process's only epoll user), make a hang-up look
// like what the descriptor's sources asked for:
//   - epoll_ctl remembers each descriptor's requested events. A request for neither input nor
//     output (libdispatch's "nothing armed") takes the descriptor out of the kernel's set
//     instead: the kernel reports EPOLLHUP and EPOLLERR whatever was asked, and a hung-up
//     socket would otherwise be reported again at once, over and over, until its sources are
//     gone. The next request with input or output puts it back.
//   - epoll_wait reports a hang-up as input and output readiness.

#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#define READY (EPOLLIN | EPOLLOUT)

// libdispatch calls epoll_ctl from the manager thread and, registering or resuming, from others.
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *parked;   // by descriptor: 1 while out of the kernel's set for asking nothing
static size_t capacity;

// Whether `fd` has a place in the table (a descriptor without one is passed through as is).
static int tracked(int fd) {
    if (fd < 0) return 0;
    if ((size_t)fd < capacity) return 1;
    size_t grown = capacity ? capacity : 1024;
    while (grown <= (size_t)fd) grown *= 2;
    uint8_t *table = realloc(parked, grown);
    if (!table) return 0;
    memset(table + capacity, 0, grown - capacity);
    parked = table;
    capacity = grown;
    return 1;
}

static int kernel_epoll_ctl(int epfd, int op, int fd, struct epoll_event *event) {
    return (int)syscall(SYS_epoll_ctl, epfd, op, fd, event);
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event) {
    pthread_mutex_lock(&lock);
    int result;
    if (!tracked(fd)) {
        result = kernel_epoll_ctl(epfd, op, fd, event);
    } else if (op == EPOLL_CTL_MOD && event && !(event->events & READY)) {
        result = parked[fd] ? 0 : kernel_epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
        if (result == 0) parked[fd] = 1;
    } else if (op == EPOLL_CTL_MOD && parked[fd]) {
        result = kernel_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, event);
        if (result == 0) parked[fd] = 0;
    } else if (op == EPOLL_CTL_DEL && parked[fd]) {
        parked[fd] = 0;
        result = 0;
    } else {
        result = kernel_epoll_ctl(epfd, op, fd, event);
        if (result == 0) parked[fd] = 0;
    }
    pthread_mutex_unlock(&lock);
    return result;
}

int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout) {
    int count = epoll_pwait(epfd, events, maxevents, timeout, NULL);
    for (int i = 0; i < count; i++) {
        // The event names libdispatch's muxnote, not the descriptor, so both readinesses are
        // reported: a source that did not ask (a suspended writer) only gets pending data,
        // which its handler finds stale, by a failed write, when it is resumed.
        if (events[i].events & EPOLLHUP) {
            events[i].events = (events[i].events & ~(uint32_t)EPOLLHUP) | READY;
        }
    }
    return count;
}
