#ifndef MAILSWITCH_SYSTEM_SHIMS_H
#define MAILSWITCH_SYSTEM_SHIMS_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>

/* Linux calls Glibc only declares under _GNU_SOURCE; defined in the .c so the
   feature macro never leaks into Swift's view of the C headers. */
int mailswitch_accept4(int fd, struct sockaddr *addr, socklen_t *len);
int mailswitch_pipe2(int fds[2]);
ssize_t mailswitch_splice(int fd_in, int fd_out, size_t len);
int mailswitch_set_pipe_size(int fd, int size);

#endif
