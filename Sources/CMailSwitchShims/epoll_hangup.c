// libdispatch's epoll backend (swift-corelibs-libdispatch, event_epoll.c) answers an EPOLLHUP
// by marking every source on the descriptor "needs delete". Such a source is then unregistered
// by its own target queue, on a worker thread, while the manager thread may still be walking
// the same muxnote in _dispatch_event_merge_fd: the worker frees the muxnote (or finalizes the
// source a second time) under the manager's feet. mailswitch hit it as a segfault in
// _dispatch_event_loop_drain about once in 250 five-second login windows; a twenty-line
// Dispatch program that closes the far end of socket pairs hits it within seconds
// (Benchmarks/hangup_race.py). Compare swift-corelibs-libdispatch issue #949.
//
// A hang-up needs no path of its own: a hung-up socket reads end-of-file or an error and
// fails a write, which every handler here already takes as the end of the connection and
// answers by cancelling its sources. So the descriptor's readers and writers are told
// "readable and writable" instead, and cancellation unregisters them on the manager queue,
// the path that is serialized with the manager's own work.
//
// This definition of epoll_wait in the executable takes precedence over libc's for
// libdispatch, the process's only epoll user; it calls the kernel through epoll_pwait.

#define _GNU_SOURCE
#include <stddef.h>
#include <sys/epoll.h>

int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout) {
    int count = epoll_pwait(epfd, events, maxevents, timeout, NULL);
    for (int i = 0; i < count; i++) {
        if (events[i].events & EPOLLHUP) {
            events[i].events = (events[i].events & ~(unsigned)EPOLLHUP) | EPOLLIN | EPOLLOUT;
        }
    }
    return count;
}
