// The floor for point 3 of the performance issue: a minimal single-threaded epoll TCP relay,
// with read/write or (--splice) with splice(2) through a pipe per direction. No protocol, no
// routing, no TLS: each LISTEN=BACKEND pair forwards every connection to one backend.
//   epoll_relay [--splice] 127.0.0.1:7143=127.0.0.2:10443 ...
// Benchmarks/relays.py starts it; it runs until killed. Level-triggered; a direction stops
// reading while its destination is full, and a half-close is passed on.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFFER 65536
#define PIPE_SIZE 65536

struct listener { int kind; int fd; struct sockaddr_in backend; };
struct connection;
struct end { int kind; int fd; struct connection *connection; };
struct direction {
    struct end *from, *to;
    char *buffer; size_t start, length;   // read/write
    int pipe[2]; size_t in_pipe;          // splice
    int source_done, shut;
};
struct connection { struct end ends[2]; struct direction directions[2]; int closed; struct connection *next_closed; };
enum { LISTENER = 1, END = 2 };

static int epfd;
static int use_splice;
// Freed after the batch of events in which they closed: a later event may still name them.
static struct connection *closed;

static void parse(const char *text, struct sockaddr_in *address) {
    char host[64];
    const char *colon = strrchr(text, ':');
    if (!colon || colon - text >= (long)sizeof host) { fprintf(stderr, "bad address %s\n", text); exit(2); }
    memcpy(host, text, colon - text); host[colon - text] = 0;
    memset(address, 0, sizeof *address);
    address->sin_family = AF_INET;
    address->sin_port = htons(atoi(colon + 1));
    if (inet_pton(AF_INET, host, &address->sin_addr) != 1) { fprintf(stderr, "bad host %s\n", host); exit(2); }
}

static void watch(struct end *end, int op, unsigned events) {
    struct epoll_event event = { .events = events, .data.ptr = end };
    epoll_ctl(epfd, op, end->fd, &event);
}

// What each socket waits for follows from both directions' state.
static void rearm(struct connection *c) {
    for (int i = 0; i < 2; i++) {
        struct end *end = &c->ends[i];
        struct direction *out = &c->directions[i];        // reads from this end
        struct direction *in = &c->directions[1 - i];     // writes to this end
        unsigned events = 0;
        int pending_out = use_splice ? out->in_pipe > 0 : out->length > 0;
        int pending_in = use_splice ? in->in_pipe > 0 : in->length > 0;
        if (!out->source_done && !pending_out) events |= EPOLLIN;
        if (pending_in) events |= EPOLLOUT;
        watch(end, EPOLL_CTL_MOD, events);
    }
}

static void finish(struct connection *c) {
    for (int i = 0; i < 2; i++) {
        close(c->ends[i].fd);
        if (use_splice) { close(c->directions[i].pipe[0]); close(c->directions[i].pipe[1]); }
        free(c->directions[i].buffer);
    }
    c->closed = 1;
    c->next_closed = closed;
    closed = c;
}

// Moves what it can; returns -1 when the connection failed.
static int flow(struct direction *d) {
    for (;;) {
        if (use_splice) {
            if (d->in_pipe > 0) {
                ssize_t n = splice(d->pipe[0], NULL, d->to->fd, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
                if (n < 0) return errno == EAGAIN ? 0 : -1;
                d->in_pipe -= n;
                if (d->in_pipe > 0) return 0;
            }
            if (d->source_done) break;
            ssize_t n = splice(d->from->fd, NULL, d->pipe[1], NULL, PIPE_SIZE, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n < 0) return errno == EAGAIN ? 0 : -1;
            if (n == 0) { d->source_done = 1; break; }
            d->in_pipe += n;
        } else {
            if (d->length > 0) {
                ssize_t n = write(d->to->fd, d->buffer + d->start, d->length);
                if (n < 0) return errno == EAGAIN ? 0 : -1;
                d->start += n; d->length -= n;
                if (d->length > 0) return 0;
            }
            if (d->source_done) break;
            ssize_t n = read(d->from->fd, d->buffer, BUFFER);
            if (n < 0) return errno == EAGAIN ? 0 : -1;
            if (n == 0) { d->source_done = 1; break; }
            d->start = 0; d->length = n;
        }
    }
    if (!d->shut) { d->shut = 1; shutdown(d->to->fd, SHUT_WR); }
    return 0;
}

static void serve(struct connection *c) {
    if (c->closed) return;
    for (int i = 0; i < 2; i++) {
        if (flow(&c->directions[i]) < 0) { finish(c); return; }
    }
    if (c->directions[0].shut && c->directions[1].shut) { finish(c); return; }
    rearm(c);
}

static void accept_all(struct listener *l) {
    for (;;) {
        int client = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (client < 0) return;
        int backend = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (backend < 0 || (connect(backend, (struct sockaddr *)&l->backend, sizeof l->backend) < 0 && errno != EINPROGRESS)) {
            close(client); if (backend >= 0) close(backend); continue;
        }
        int one = 1;
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(backend, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct connection *c = calloc(1, sizeof *c);
        c->ends[0] = (struct end){ END, client, c };
        c->ends[1] = (struct end){ END, backend, c };
        for (int i = 0; i < 2; i++) {
            struct direction *d = &c->directions[i];
            d->from = &c->ends[i]; d->to = &c->ends[1 - i];
            if (use_splice) {
                if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) < 0) { perror("pipe2"); exit(1); }
                fcntl(d->pipe[0], F_SETPIPE_SZ, PIPE_SIZE);
            } else {
                d->buffer = malloc(BUFFER);
            }
        }
        // A connect in progress reports writability when done; until then reads wait.
        watch(&c->ends[0], EPOLL_CTL_ADD, EPOLLIN);
        watch(&c->ends[1], EPOLL_CTL_ADD, EPOLLIN | EPOLLOUT);
    }
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    int listeners = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--splice") == 0) { use_splice = 1; continue; }
        char *equals = strchr(argv[i], '=');
        if (!equals) { fprintf(stderr, "usage: epoll_relay [--splice] LISTEN=BACKEND ...\n"); return 2; }
        *equals = 0;
        struct listener *l = calloc(1, sizeof *l);
        struct sockaddr_in address;
        parse(argv[i], &address);
        parse(equals + 1, &l->backend);
        l->kind = LISTENER;
        l->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(l->fd, (struct sockaddr *)&address, sizeof address) < 0 || listen(l->fd, 1024) < 0) {
            perror(argv[i]); return 1;
        }
        struct epoll_event event = { .events = EPOLLIN, .data.ptr = l };
        epoll_ctl(epfd, EPOLL_CTL_ADD, l->fd, &event);
        listeners++;
    }
    if (!listeners) { fprintf(stderr, "usage: epoll_relay [--splice] LISTEN=BACKEND ...\n"); return 2; }
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(epfd, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int kind = *(int *)events[i].data.ptr;
            if (kind == LISTENER) accept_all(events[i].data.ptr);
            else serve(((struct end *)events[i].data.ptr)->connection);
        }
        while (closed) { struct connection *next = closed->next_closed; free(closed); closed = next; }
    }
}
