#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include "CSystemShims.h"

int mailswitch_accept4(int fd, struct sockaddr *addr, socklen_t *len) {
    return accept4(fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int mailswitch_pipe2(int fds[2]) {
    return pipe2(fds, O_NONBLOCK | O_CLOEXEC);
}

ssize_t mailswitch_splice(int fd_in, int fd_out, size_t len) {
    return splice(fd_in, NULL, fd_out, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
}

int mailswitch_set_pipe_size(int fd, int size) {
    return fcntl(fd, F_SETPIPE_SZ, size);
}

_Static_assert(MAILSWITCH_READABLE == EPOLLIN && MAILSWITCH_WRITABLE == EPOLLOUT && MAILSWITCH_ERROR == EPOLLERR
               && MAILSWITCH_HANGUP == EPOLLHUP && MAILSWITCH_READ_HANGUP == EPOLLRDHUP
               && (unsigned)MAILSWITCH_EDGE == (unsigned)EPOLLET, "epoll's event bits");
_Static_assert(MAILSWITCH_CTL_ADD == EPOLL_CTL_ADD && MAILSWITCH_CTL_DEL == EPOLL_CTL_DEL
               && MAILSWITCH_CTL_MOD == EPOLL_CTL_MOD, "epoll's operations");

int mailswitch_epoll_create(void) {
    return epoll_create1(EPOLL_CLOEXEC);
}

int mailswitch_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t key) {
    struct epoll_event event = { .events = events, .data = { .u64 = key } };
    return epoll_ctl(epfd, op, fd, &event);
}

int mailswitch_epoll_poll(int epfd, mailswitch_readiness *ready, int capacity) {
    struct epoll_event events[capacity];
    int count = epoll_wait(epfd, events, capacity, 0);
    for (int i = 0; i < count; i++) {
        ready[i].events = events[i].events;
        ready[i].key = events[i].data.u64;
    }
    return count;
}

int mailswitch_epoll_wait_for(int epfd, mailswitch_readiness *ready, int capacity, long nanoseconds) {
    struct epoll_event events[capacity];
    struct timespec timeout = { .tv_sec = nanoseconds / 1000000000L, .tv_nsec = nanoseconds % 1000000000L };
    int count = epoll_pwait2(epfd, events, capacity, &timeout, NULL);
    for (int i = 0; i < count; i++) {
        ready[i].events = events[i].events;
        ready[i].key = events[i].data.u64;
    }
    return count;
}

int mailswitch_wake_create(void) {
    return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

void mailswitch_wake_poke(int fd) {
    eventfd_write(fd, 1);
}

void mailswitch_wake_reset(int fd) {
    eventfd_t value;
    eventfd_read(fd, &value);
}

int mailswitch_set_reuse_port(int fd) {
    int one = 1;
    return setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
}
