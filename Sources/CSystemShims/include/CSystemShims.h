#ifndef MAILSWITCH_SYSTEM_SHIMS_H
#define MAILSWITCH_SYSTEM_SHIMS_H

#include <stddef.h>
#include <sys/types.h>
#include <stdint.h>
#include <sys/socket.h>

/* Linux calls Glibc only declares under _GNU_SOURCE; defined in the .c so the
   feature macro never leaks into Swift's view of the C headers. */
int mailswitch_accept4(int fd, struct sockaddr *addr, socklen_t *len);
int mailswitch_pipe2(int fds[2]);
ssize_t mailswitch_splice(int fd_in, int fd_out, size_t len);
int mailswitch_set_pipe_size(int fd, int size);

/* A loop's readiness set (epoll). `struct epoll_event` is packed on x86-64, which Swift
   cannot lay out; these take and give the two fields apart. */
typedef struct {
    uint32_t events;
    uint64_t key;
} mailswitch_readiness;

enum {
    MAILSWITCH_READABLE = 0x001,      /* EPOLLIN */
    MAILSWITCH_WRITABLE = 0x004,      /* EPOLLOUT */
    MAILSWITCH_ERROR = 0x008,         /* EPOLLERR */
    MAILSWITCH_HANGUP = 0x010,        /* EPOLLHUP */
    MAILSWITCH_READ_HANGUP = 0x2000,  /* EPOLLRDHUP */
    MAILSWITCH_EDGE = (int)(1u << 31) /* EPOLLET */
};

enum {
    MAILSWITCH_CTL_ADD = 1,
    MAILSWITCH_CTL_DEL = 2,
    MAILSWITCH_CTL_MOD = 3
};

int mailswitch_epoll_create(void);
int mailswitch_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t key);
/* Never blocks (timeout 0); returns the count, or -1 with errno. */
int mailswitch_epoll_poll(int epfd, mailswitch_readiness *ready, int capacity);
/* Waits at most `nanoseconds` (epoll_pwait2); -1 with ENOSYS where the kernel lacks it. */
int mailswitch_epoll_wait_for(int epfd, mailswitch_readiness *ready, int capacity, long nanoseconds);
/* An eventfd that wakes a loop's wait: made, poked, and reset. */
int mailswitch_wake_create(void);
void mailswitch_wake_poke(int fd);
void mailswitch_wake_reset(int fd);
int mailswitch_set_reuse_port(int fd);

#endif
