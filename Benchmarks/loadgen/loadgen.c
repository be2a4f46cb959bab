/*
 * loadgen: a single-threaded IMAP/POP3 load generator for the mailswitch benchmarks.
 *
 *   gcc -O2 -Wall -Wextra -o loadgen loadgen.c -lssl -lcrypto
 *   loadgen SCENARIO [options]        (loadgen --help)
 *
 * Non-blocking sockets, one level-triggered epoll set, OpenSSL for implicit TLS. No allocation
 * on the request path: each connection owns a fixed read buffer, requests are prebuilt, and
 * latency samples go to a preallocated array. Prints one JSON object on stdout at the end;
 * diagnostics on stderr. Exit 0 when it ran (even with errors), 2 on usage errors.
 *
 * Every loop is bounded: a run ends at --count or --duration, each protocol step has a
 * --timeout, the final logout phase is bounded, and --max-time caps everything.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define NS_PER_S 1000000000ull
#define NS_PER_MS 1000000ull
#define TICK_NS (10 * NS_PER_MS)          /* timeout scan / delayed relaunch granularity */
#define ERROR_BACKOFF_NS (10 * NS_PER_MS) /* login: a worker pauses this long after an error */
#define EOF_WAIT_NS (1000 * NS_PER_MS)    /* after the logout reply, wait this long for the close */
#define RBUF_SMALL 8192                   /* read buffer: longest line we accept */
#define RBUF_FETCH (256 * 1024)           /* fetch: bigger reads for literals */
#define SAMPLE_LIMIT (16u << 20)          /* kept samples (then reservoir sampling) */
#define MAX_SLOTS 1000000
#define MAX_ERROR_LOGS 20

/* ------------------------------------------------------------------------------------------ */
/* options */

enum { SC_LOGIN, SC_NOOP, SC_FETCH, SC_IDLE };
static const char *const scenario_names[] = {"login", "noop", "fetch", "idle"};
enum { PR_IMAP, PR_POP3 };

static struct {
    int scenario, proto, tls, tls_resume, check, verbose, busy_poll;
    const char *cafile, *servername, *users_file, *target;
    long concurrency;
    uint64_t count;          /* 0 = none */
    uint64_t duration_ns;    /* 0 = none */
    int duration_given;
    uint64_t warmup_ns, timeout_ns, max_time_ns;
    uint64_t append_size, message;
} O;

/* ------------------------------------------------------------------------------------------ */
/* users and targets */

struct target {
    struct sockaddr_in addr;
    char ipstr[INET_ADDRSTRLEN];
    SSL_SESSION *session;    /* --tls-resume: last session ticket from this address */
};

struct user {
    char *name, *expect;     /* expect: store name, "" = do not check */
    char *expect_cap;        /* "X-STORE-<EXPECT uppercased>" */
    char *servername;        /* optional 5th column */
    int target;
    char *imap_login, *pop_user, *pop_pass;
    size_t imap_login_len, pop_user_len, pop_pass_len;
};

static struct user *users;
static size_t nusers;
static struct target *targets;
static size_t ntargets;

/* ------------------------------------------------------------------------------------------ */
/* connections */

enum {
    ST_FREE, ST_CONNECTING, ST_HANDSHAKE, ST_GREETING,
    ST_I_LOGIN, ST_I_CAPA, ST_I_APPEND_CONT, ST_I_APPEND, ST_I_SELECT, ST_I_REQ, ST_I_LOGOUT,
    ST_P_USER, ST_P_PASS, ST_P_TOP, ST_P_TOP_BODY, ST_P_REQ, ST_P_QUIT,
    ST_READY,     /* noop/fetch: logged in, nothing outstanding */
    ST_HELD,      /* idle: logged in, holding */
    ST_WAIT_EOF,  /* logout answered; waiting for the server to close */
};
static const char *const state_names[] = {
    "free", "connecting", "tls-handshake", "greeting",
    "login", "capability", "append-continuation", "append", "select", "request", "logout",
    "user", "pass", "top", "top-body", "request", "quit", "ready", "held", "wait-eof",
};

struct conn {
    int fd, slot, state, user;
    uint32_t gen, evmask;
    SSL *ssl;
    uint64_t t_start, t_login, t_sent, deadline, relaunch_at;
    char *rbuf;
    size_t rcap, rs, re;
    uint64_t lit_left;
    int lit_tail;            /* the next line continues an untagged response after a literal */
    const char *wptr;
    size_t wlen, woff;
    const char *req;         /* noop/fetch request, prebuilt */
    size_t req_len;
    char cmd[64];
    int logged_in, caps_seen, store_ok, active, setup_counted;
    uint64_t exists, cur_lit, cur_lit_n, done, expect_size;
    char seen_store[48];
};

/* ------------------------------------------------------------------------------------------ */
/* errors, samples */

enum { E_CONNECT, E_REFUSED, E_TLS, E_AUTH, E_WRONG_STORE, E_WRONG_SIZE, E_TIMEOUT, E_CLOSED,
       E_PROTOCOL, E_LOGOUT, E_DROPPED, E_NKINDS };
static const char *const err_names[E_NKINDS] = {
    "connect", "refused", "tls", "auth", "wrong_store", "wrong_size", "timeout", "closed",
    "protocol", "logout", "dropped"};

struct samples {
    uint64_t *v;
    size_t n, cap, limit;
    uint64_t seen, max, rng;
    double sum;
};

/* ------------------------------------------------------------------------------------------ */
/* run state */

enum { PH_SETUP, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_DONE };

static struct {
    int ep, phase;
    SSL_CTX *ctx;
    struct conn *conns;
    size_t nslots;
    int *queue;              /* slots to launch now (ring) */
    size_t qhead, qlen;
    uint64_t start, ms, me, warm_end, measure_deadline, drain_deadline, hard_deadline, next_tick;
    int ms_set, me_set;
    struct rusage ru_ms, ru_me;
    long open;               /* open sockets */
    uint64_t next_user, launched_measure, completed;
    uint64_t ok, err[E_NKINDS], uncounted_ok, uncounted_err, error_logs;
    uint64_t tls_handshakes, tls_resumed, logout_ok, logout_no_close, forced_closes;
    long setup_done, ready, active, setup_err, launched;   /* noop/fetch/idle */
    int kick_start, kick_logout;
    uint64_t bytes, expect_size, msgno;
    int appended, mixed_sizes;
    struct samples lat;
    volatile sig_atomic_t sig;
    int sig_seen, interrupted, hard_hit;
    rlim_t nofile;
    char *append_buf;
    size_t append_len;
} R;

static void handle_signal(int s) { (void)s; R.sig++; }

static inline uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (loadgen --help)\n", stderr);
    va_end(ap);
    exit(2);
}

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: fatal: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p) fatal("out of memory (%zu bytes)", n);
    return p;
}

/* ---- samples ---------------------------------------------------------------------------- */

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return *s = x;
}

static void samples_init(struct samples *s, size_t initial) {
    s->limit = SAMPLE_LIMIT;
    s->cap = initial;
    s->v = malloc(initial * sizeof *s->v);
    if (!s->v) fatal("out of memory for samples");
    s->rng = 0x2545F4914F6CDD1Dull;
}

static void samples_add(struct samples *s, uint64_t x) {
    s->seen++;
    s->sum += (double)x;
    if (x > s->max) s->max = x;
    if (s->n < s->limit) {
        if (s->n == s->cap) {
            size_t nc = s->cap * 2;
            if (nc > s->limit) nc = s->limit;
            uint64_t *p = realloc(s->v, nc * sizeof *p);
            if (!p) { s->limit = s->n; goto reservoir; }
            s->v = p;
            s->cap = nc;
        }
        s->v[s->n++] = x;
        return;
    }
reservoir:
    if (s->n) {
        uint64_t j = xorshift(&s->rng) % s->seen;
        if (j < s->n) s->v[j] = x;
    }
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(const struct samples *s, double q) {  /* nearest rank, v sorted */
    if (!s->n) return 0;
    double x = q * (double)s->n;
    size_t idx = (size_t)x;
    if ((double)idx < x) idx++;
    if (idx < 1) idx = 1;
    if (idx > s->n) idx = s->n;
    return (double)s->v[idx - 1] / 1000.0;
}

/* ---- errors ----------------------------------------------------------------------------- */

static int counting(void) {
    /* login: only the measurement window counts (warmup and the final drain do not).
       Others: everything but the warmup counts (setup logins, holds and logouts matter). */
    if (O.scenario == SC_LOGIN) return R.phase == PH_MEASURE;
    return R.phase != PH_WARMUP;
}

/* ------------------------------------------------------------------------------------------ */
/* forward declarations */

static int conn_fail(struct conn *c, int kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void on_closed(struct conn *c, int was_err);
static int do_read(struct conn *c);
static int send_logout(struct conn *c);
static void end_measure(uint64_t now);
static void start_measure(uint64_t now);

/* ---- connection plumbing ------------------------------------------------------------------ */

static inline uint64_t ev_data(const struct conn *c) { return ((uint64_t)c->gen << 32) | (uint32_t)c->slot; }

static void set_events(struct conn *c, uint32_t m) {
    if (c->evmask == m) return;
    struct epoll_event ev = {.events = m, .data.u64 = ev_data(c)};
    if (epoll_ctl(R.ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) fatal("epoll_ctl MOD: %s", strerror(errno));
    c->evmask = m;
}

static void conn_close(struct conn *c) {
    if (c->ssl) { SSL_free(c->ssl); c->ssl = NULL; }
    if (c->fd >= 0) { close(c->fd); c->fd = -1; R.open--; }
    c->gen++;
    c->state = ST_FREE;
    c->rs = c->re = 0;
    c->lit_left = 0;
    c->lit_tail = 0;
    c->wlen = c->woff = 0;
    c->deadline = 0;
}

static int conn_fail(struct conn *c, int kind, const char *fmt, ...) {
    /* a failure after a good login, while logging out, is a logout error */
    if (c->logged_in && (c->state == ST_I_LOGOUT || c->state == ST_P_QUIT) && kind != E_DROPPED)
        kind = E_LOGOUT;
    int counted = counting();
    if (counted) R.err[kind]++;
    else R.uncounted_err++;
    if (R.error_logs < MAX_ERROR_LOGS || O.verbose) {
        R.error_logs++;
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        fprintf(stderr, "loadgen: %s%s: user %s -> %s:%u (%s): %s\n", err_names[kind], counted ? "" : " (uncounted)",
                users[c->user].name, targets[users[c->user].target].ipstr,
                ntohs(targets[users[c->user].target].addr.sin_port), state_names[c->state], msg);
        if (R.error_logs == MAX_ERROR_LOGS && !O.verbose)
            fprintf(stderr, "loadgen: (further errors are only counted; --verbose shows them all)\n");
    }
    conn_close(c);
    on_closed(c, 1);
    return -1;
}

static int conn_done(struct conn *c) {
    conn_close(c);
    on_closed(c, 0);
    return -1;
}

static int flush(struct conn *c) {
    while (c->woff < c->wlen) {
        if (c->ssl) {
            size_t left = c->wlen - c->woff;
            ERR_clear_error();
            int r = SSL_write(c->ssl, c->wptr + c->woff, left > INT_MAX ? INT_MAX : (int)left);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE) { set_events(c, EPOLLIN | EPOLLOUT); return 0; }
                if (e == SSL_ERROR_WANT_READ) { set_events(c, EPOLLIN); return 0; }
                return conn_fail(c, E_CLOSED, "TLS write failed (error %d)", e);
            }
            c->woff += (size_t)r;
        } else {
            ssize_t n = send(c->fd, c->wptr + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) { set_events(c, EPOLLIN | EPOLLOUT); return 0; }
                return conn_fail(c, E_CLOSED, "send: %s", strerror(errno));
            }
            c->woff += (size_t)n;
        }
    }
    c->wlen = c->woff = 0;
    if (c->evmask & EPOLLOUT) set_events(c, EPOLLIN);
    return 0;
}

/* Sends buf (which must stay valid until written) and waits for the answer in state st. */
static int send_cmd(struct conn *c, int st, const char *buf, size_t len, uint64_t now) {
    c->state = st;
    c->deadline = now + O.timeout_ns;
    c->wptr = buf;
    c->wlen = len;
    c->woff = 0;
    return flush(c);
}

static int send_str(struct conn *c, int st, const char *s) { return send_cmd(c, st, s, strlen(s), mono_ns()); }

/* ---- scenario hooks ----------------------------------------------------------------------- */

static void enqueue(int slot) {
    if (R.qlen >= R.nslots) return;   /* cannot happen: each slot is queued at most once */
    R.queue[(R.qhead + R.qlen) % R.nslots] = slot;
    R.qlen++;
}

static void idle_open_finished(uint64_t now) {
    R.setup_done++;
    if (R.phase == PH_SETUP && R.launched < (long)O.count) enqueue((int)R.launched++);
    if (R.phase == PH_SETUP && R.setup_done >= (long)O.count) {
        fprintf(stderr, "READY %" PRIu64 " %ld\n", R.ok, R.setup_err);
        fflush(stderr);
        start_measure(now);
    }
}

static void noop_setup_finished(void) {
    R.setup_done++;
    if (R.phase == PH_SETUP && R.setup_done >= O.concurrency) R.kick_start = 1;
}

static void on_closed(struct conn *c, int was_err) {
    uint64_t now = mono_ns();
    switch (O.scenario) {
    case SC_LOGIN:
        if (was_err && !c->logged_in && R.phase == PH_MEASURE) {   /* a failed login completes too */
            R.completed++;
            if (O.count && R.completed >= O.count) end_measure(now);
        }
        if (R.phase == PH_WARMUP || R.phase == PH_MEASURE) {
            if (was_err) c->relaunch_at = now + ERROR_BACKOFF_NS;
            else enqueue(c->slot);
        }
        break;
    case SC_NOOP:
    case SC_FETCH:
        if (c->active) {
            c->active = 0;
            R.active--;
            if (R.active == 0 && (R.phase == PH_WARMUP || R.phase == PH_MEASURE)) end_measure(now);
        } else if (R.phase == PH_SETUP) {
            if (!c->setup_counted) {
                c->setup_counted = 1;
                R.setup_err++;
                noop_setup_finished();
            } else {
                R.ready--;   /* was ready, died before the run began */
            }
        }
        break;
    case SC_IDLE:
        if (!c->setup_counted && R.phase == PH_SETUP) {
            c->setup_counted = 1;
            R.setup_err++;
            idle_open_finished(now);
        }
        break;
    }
    c->logged_in = 0;
    c->active = 0;
}

static int become_ready(struct conn *c) {
    if (R.phase >= PH_DRAIN) return send_logout(c);
    c->state = ST_READY;
    c->deadline = 0;
    c->setup_counted = 1;
    R.ready++;
    noop_setup_finished();
    return 0;
}

/* login verified (store checked) */
static int logged_in(struct conn *c) {
    c->logged_in = 1;
    uint64_t now = mono_ns();
    switch (O.scenario) {
    case SC_LOGIN:
        if (R.phase == PH_MEASURE) {
            R.ok++;
            samples_add(&R.lat, c->t_login - c->t_start);
            R.completed++;
            if (O.count && R.completed >= O.count) end_measure(now);
        } else {
            R.uncounted_ok++;
        }
        return send_logout(c);
    case SC_FETCH:
        if (R.phase >= PH_DRAIN) return send_logout(c);
        if (O.append_size) return send_cmd(c, ST_I_APPEND_CONT, c->cmd, strlen(c->cmd), now);
        return send_str(c, ST_I_SELECT, "s SELECT INBOX\r\n");
    case SC_NOOP:
        return become_ready(c);
    case SC_IDLE:
        if (R.phase >= PH_DRAIN) return send_logout(c);
        R.ok++;
        samples_add(&R.lat, c->t_login - c->t_start);
        c->setup_counted = 1;
        c->state = ST_HELD;
        c->deadline = 0;
        idle_open_finished(now);
        return 0;
    }
    return 0;
}

static int send_req(struct conn *c) {
    uint64_t now = mono_ns();
    c->t_sent = now;
    c->cur_lit_n = 0;
    return send_cmd(c, O.proto == PR_IMAP ? ST_I_REQ : ST_P_REQ, c->req, c->req_len, now);
}

/* noop/fetch: the answer to a request arrived */
static int req_done(struct conn *c) {
    uint64_t now = mono_ns();
    uint64_t size = 0;
    if (O.scenario == SC_FETCH) {
        if (c->cur_lit_n != 1)
            return conn_fail(c, E_PROTOCOL, "FETCH answer had %" PRIu64 " literals, expected 1", c->cur_lit_n);
        size = c->cur_lit;
        if (!c->expect_size) {   /* no APPEND: the first fetch sets this connection's size */
            c->expect_size = size;
            if (!R.expect_size) R.expect_size = size;
            else if (R.expect_size != size) R.mixed_sizes = 1;
        }
        if (size != c->expect_size)
            return conn_fail(c, E_WRONG_SIZE, "fetched %" PRIu64 " bytes, expected %" PRIu64, size, c->expect_size);
    }
    if (R.phase == PH_MEASURE && c->t_sent >= R.ms) {
        R.ok++;
        R.bytes += size;
        samples_add(&R.lat, now - c->t_sent);
        c->done++;
        if (O.count && c->done >= O.count) {
            c->state = ST_READY;
            c->deadline = 0;
            c->active = 0;
            R.active--;
            if (R.active == 0) end_measure(now);
            return 0;
        }
    } else if (R.phase != PH_DRAIN) {
        R.uncounted_ok++;
    }
    if (R.phase >= PH_DRAIN) {
        if (c->active) { c->active = 0; R.active--; }
        return send_logout(c);
    }
    return send_req(c);
}

static int send_logout(struct conn *c) {
    if (O.proto == PR_IMAP) return send_str(c, ST_I_LOGOUT, "z LOGOUT\r\n");
    return send_str(c, ST_P_QUIT, "QUIT\r\n");
}

static int logout_answered(struct conn *c) {
    R.logout_ok++;
    c->state = ST_WAIT_EOF;
    c->deadline = mono_ns() + (EOF_WAIT_NS < O.timeout_ns ? EOF_WAIT_NS : O.timeout_ns);
    return 0;
}

static int send_login(struct conn *c) {
    struct user *u = &users[c->user];
    if (O.proto == PR_IMAP) return send_cmd(c, ST_I_LOGIN, u->imap_login, u->imap_login_len, mono_ns());
    return send_cmd(c, ST_P_USER, u->pop_user, u->pop_user_len, mono_ns());
}

/* ---- protocol: IMAP ----------------------------------------------------------------------- */

static int has_cap(const char *line, const char *cap) {
    size_t n = strlen(cap);
    for (const char *p = strcasestr(line, cap); p; p = strcasestr(p + 1, cap)) {
        char before = p == line ? ' ' : p[-1], after = p[n];
        if ((before == ' ' || before == '[') && (after == ' ' || after == ']' || after == 0)) return 1;
    }
    return 0;
}

static void note_caps(struct conn *c, const char *line) {
    struct user *u = &users[c->user];
    c->caps_seen = 1;
    if (has_cap(line, u->expect_cap)) { c->store_ok = 1; return; }
    const char *p = strcasestr(line, " X-STORE-");
    if (p && !c->seen_store[0]) {
        size_t i = 0;
        p += 9;
        while (p[i] && p[i] != ' ' && p[i] != ']' && i < sizeof c->seen_store - 1) { c->seen_store[i] = p[i]; i++; }
        c->seen_store[i] = 0;
    }
}

static int login_checked(struct conn *c) {
    struct user *u = &users[c->user];
    if (!O.check || !u->expect[0] || c->store_ok) return logged_in(c);
    if (O.proto == PR_IMAP)
        return conn_fail(c, E_WRONG_STORE, "expected %s, capabilities name %s", u->expect_cap,
                         c->seen_store[0] ? c->seen_store : "no X-STORE-*");
    return conn_fail(c, E_WRONG_STORE, "expected X-Store: %s, message 1 says %s", u->expect,
                     c->seen_store[0] ? c->seen_store : "nothing");
}

/* status of a tagged line "t OK ..." : 0 OK, 1 NO, 2 BAD/other */
static int tagged_status(const char *line) {
    const char *p = line + 2;
    if (!strncasecmp(p, "OK", 2) && (p[2] == ' ' || p[2] == 0)) return 0;
    if (!strncasecmp(p, "NO", 2) && (p[2] == ' ' || p[2] == 0)) return 1;
    return 2;
}

static int imap_line(struct conn *c, char *line, size_t len, int cont, int64_t lit) {
    int tagged = !cont && len >= 2 && line[1] == ' ' && line[0] != '*' && line[0] != '+';
    int untagged = cont || (len >= 2 && line[0] == '*' && line[1] == ' ');
    switch (c->state) {
    case ST_GREETING:
        if (!strncasecmp(line, "* OK", 4)) return send_login(c);
        return conn_fail(c, E_PROTOCOL, "greeting: %.200s", line);
    case ST_I_LOGIN:
        if (untagged) {
            if (!cont && !strncasecmp(line, "* CAPABILITY ", 13)) note_caps(c, line);
            return 0;
        }
        if (!tagged || line[0] != 'a') return conn_fail(c, E_PROTOCOL, "unexpected: %.200s", line);
        switch (tagged_status(line)) {
        case 0:
            c->t_login = mono_ns();
            if (strcasestr(line, "[CAPABILITY ")) note_caps(c, line);
            if (!O.check || !users[c->user].expect[0] || c->caps_seen) return login_checked(c);
            return send_str(c, ST_I_CAPA, "c CAPABILITY\r\n");
        case 1: return conn_fail(c, E_AUTH, "%.200s", line);
        default: return conn_fail(c, E_PROTOCOL, "%.200s", line);
        }
    case ST_I_CAPA:
        if (untagged) {
            if (!cont && !strncasecmp(line, "* CAPABILITY ", 13)) note_caps(c, line);
            return 0;
        }
        if (!tagged || line[0] != 'c' || tagged_status(line) != 0)
            return conn_fail(c, E_PROTOCOL, "CAPABILITY: %.200s", line);
        return login_checked(c);
    case ST_I_APPEND_CONT:
        if (!cont && line[0] == '+') {
            c->state = ST_I_APPEND;
            c->wptr = R.append_buf;
            c->wlen = R.append_len;
            c->woff = 0;
            c->deadline = mono_ns() + O.timeout_ns;
            return flush(c);
        }
        if (untagged) return 0;
        return conn_fail(c, E_PROTOCOL, "APPEND refused: %.200s", line);
    case ST_I_APPEND:
        if (untagged) return 0;
        if (!tagged || line[0] != 'p' || tagged_status(line) != 0)
            return conn_fail(c, E_PROTOCOL, "APPEND: %.200s", line);
        R.appended = 1;
        return send_str(c, ST_I_SELECT, "s SELECT INBOX\r\n");
    case ST_I_SELECT:
        if (untagged) {
            char *end;
            if (!cont && len > 2 && line[2] >= '0' && line[2] <= '9') {
                unsigned long long n = strtoull(line + 2, &end, 10);
                if (!strcasecmp(end, " EXISTS")) c->exists = n;
            }
            return 0;
        }
        if (!tagged || line[0] != 's' || tagged_status(line) != 0)
            return conn_fail(c, E_PROTOCOL, "SELECT: %.200s", line);
        {
            uint64_t msg = O.message ? O.message : c->exists;
            if (!msg) return conn_fail(c, E_PROTOCOL, "INBOX is empty");
            int n = snprintf(c->cmd, sizeof c->cmd, "f FETCH %" PRIu64 " BODY.PEEK[]\r\n", msg);
            c->req = c->cmd;
            c->req_len = (size_t)n;
            if (!R.msgno) R.msgno = msg;
        }
        return become_ready(c);
    case ST_I_REQ:
        if (untagged) {
            if (lit >= 0) { c->cur_lit = (uint64_t)lit; c->cur_lit_n++; }
            return 0;
        }
        if (!tagged || line[0] != c->req[0] || tagged_status(line) != 0)
            return conn_fail(c, E_PROTOCOL, "request: %.200s", line);
        return req_done(c);
    case ST_I_LOGOUT:
        if (untagged) return 0;
        if (tagged && line[0] == 'z') return logout_answered(c);
        return conn_fail(c, E_LOGOUT, "%.200s", line);
    case ST_HELD:
        if (!cont && !strncasecmp(line, "* BYE", 5)) return conn_fail(c, E_DROPPED, "%.200s", line);
        return 0;
    case ST_WAIT_EOF:
    case ST_READY:
        return 0;
    }
    return conn_fail(c, E_PROTOCOL, "unexpected in state %s: %.200s", state_names[c->state], line);
}

/* ---- protocol: POP3 ----------------------------------------------------------------------- */

static int pop3_line(struct conn *c, char *line, size_t len) {
    int okr = !strncmp(line, "+OK", 3);
    (void)len;
    switch (c->state) {
    case ST_GREETING:
        if (okr) return send_login(c);
        return conn_fail(c, E_PROTOCOL, "greeting: %.200s", line);
    case ST_P_USER:
        if (!okr) return conn_fail(c, E_AUTH, "USER: %.200s", line);
        return send_cmd(c, ST_P_PASS, users[c->user].pop_pass, users[c->user].pop_pass_len, mono_ns());
    case ST_P_PASS:
        if (!okr) return conn_fail(c, E_AUTH, "PASS: %.200s", line);
        c->t_login = mono_ns();
        if (!O.check || !users[c->user].expect[0]) return logged_in(c);
        return send_str(c, ST_P_TOP, "TOP 1 0\r\n");
    case ST_P_TOP:
        if (!okr) return conn_fail(c, E_PROTOCOL, "TOP 1 0: %.200s", line);
        c->state = ST_P_TOP_BODY;
        return 0;
    case ST_P_TOP_BODY: {
        if (line[0] == '.' && line[1] == 0) return login_checked(c);
        const char *p = line[0] == '.' ? line + 1 : line;
        if (!strncasecmp(p, "X-Store:", 8)) {
            p += 8;
            while (*p == ' ' || *p == '\t') p++;
            size_t n = strlen(p);
            while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
            if (n == strlen(users[c->user].expect) && !strncasecmp(p, users[c->user].expect, n)) c->store_ok = 1;
            else if (!c->seen_store[0]) snprintf(c->seen_store, sizeof c->seen_store, "%.*s", (int)n, p);
        }
        return 0;
    }
    case ST_P_REQ:
        if (!okr) return conn_fail(c, E_PROTOCOL, "NOOP: %.200s", line);
        return req_done(c);
    case ST_P_QUIT:
        if (okr) return logout_answered(c);
        return conn_fail(c, E_LOGOUT, "QUIT: %.200s", line);
    case ST_HELD:
        return conn_fail(c, E_DROPPED, "%.200s", line);
    case ST_WAIT_EOF:
    case ST_READY:
        return 0;
    }
    return conn_fail(c, E_PROTOCOL, "unexpected in state %s: %.200s", state_names[c->state], line);
}

/* ---- input -------------------------------------------------------------------------------- */

static int on_eof(struct conn *c) {
    switch (c->state) {
    case ST_WAIT_EOF: return conn_done(c);
    case ST_HELD: return conn_fail(c, E_DROPPED, "server closed the idle session");
    case ST_I_LOGOUT:
    case ST_P_QUIT: return conn_fail(c, E_LOGOUT, "closed before the logout reply");
    default: return conn_fail(c, E_CLOSED, "server closed the connection");
    }
}

/* Consumes complete lines (and IMAP literals) from the read buffer. */
static int process(struct conn *c) {
    while (c->rs < c->re) {
        if (c->lit_left) {
            size_t avail = c->re - c->rs;
            size_t take = avail < c->lit_left ? avail : (size_t)c->lit_left;
            c->rs += take;
            c->lit_left -= take;
            if (c->lit_left) break;
            c->lit_tail = 1;
            continue;
        }
        char *line = c->rbuf + c->rs;
        char *nl = memchr(line, '\n', c->re - c->rs);
        if (!nl) break;
        size_t len = (size_t)(nl - line);
        c->rs += len + 1;
        if (len && line[len - 1] == '\r') len--;
        line[len] = 0;
        int cont = c->lit_tail;
        c->lit_tail = 0;
        int64_t lit = -1;
        if (O.proto == PR_IMAP && len >= 3 && line[len - 1] == '}') {
            size_t i = len - 1;
            if (i && line[i - 1] == '+') i--;       /* literal+ (never from servers, harmless) */
            size_t end = i;
            while (i && line[i - 1] >= '0' && line[i - 1] <= '9') i--;
            if (i && line[i - 1] == '{' && i < end && end - i <= 18) {
                lit = (int64_t)strtoull(line + i, NULL, 10);
                if (lit == 0) c->lit_tail = 1;
                else c->lit_left = (uint64_t)lit;
            }
        }
        int r = O.proto == PR_IMAP ? imap_line(c, line, len, cont, lit) : pop3_line(c, line, len);
        if (r < 0) return -1;
    }
    if (c->rs == c->re) c->rs = c->re = 0;
    return 0;
}

static int do_read(struct conn *c) {
    for (;;) {
        if (c->re == c->rcap) {
            if (c->rs > 0) {
                memmove(c->rbuf, c->rbuf + c->rs, c->re - c->rs);
                c->re -= c->rs;
                c->rs = 0;
            } else {
                return conn_fail(c, E_PROTOCOL, "line longer than %zu bytes", c->rcap);
            }
        }
        size_t room = c->rcap - c->re;
        if (c->ssl) {
            ERR_clear_error();
            errno = 0;
            int r = SSL_read(c->ssl, c->rbuf + c->re, room > INT_MAX ? INT_MAX : (int)room);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ) return 0;
                if (e == SSL_ERROR_WANT_WRITE) { set_events(c, EPOLLIN | EPOLLOUT); return 0; }
                if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0))
                    return on_eof(c);
                if (c->state == ST_WAIT_EOF) return conn_done(c);
                unsigned long ee = ERR_peek_error();
                return conn_fail(c, e == SSL_ERROR_SYSCALL ? E_CLOSED : E_TLS, "TLS read: %s",
                                 ee ? ERR_reason_error_string(ee) : strerror(errno));
            }
            c->re += (size_t)r;
        } else {
            ssize_t n = recv(c->fd, c->rbuf + c->re, room, 0);
            if (n == 0) return on_eof(c);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
                if (c->state == ST_WAIT_EOF) return conn_done(c);
                return conn_fail(c, E_CLOSED, "recv: %s", strerror(errno));
            }
            c->re += (size_t)n;
        }
        if (process(c) < 0) return -1;
        /* level-triggered epoll reports what is left in the socket; only TLS can hold
           already-read bytes of its own */
        if (!c->ssl || !SSL_has_pending(c->ssl)) return 0;
    }
}

/* ---- connecting --------------------------------------------------------------------------- */

static int new_session_cb(SSL *ssl, SSL_SESSION *sess) {
    struct conn *c = SSL_get_app_data(ssl);
    struct target *t = &targets[users[c->user].target];
    /* keep a copy: OpenSSL marks the connection's own session object not resumable when the
       connection is freed without a close_notify (we close without one) */
    SSL_SESSION *copy = SSL_SESSION_dup(sess);
    if (!copy) return 0;
    if (t->session) SSL_SESSION_free(t->session);
    t->session = copy;
    return 0;
}

static int do_handshake(struct conn *c) {
    ERR_clear_error();
    int r = SSL_connect(c->ssl);
    if (r == 1) {
        R.tls_handshakes++;
        if (SSL_session_reused(c->ssl)) R.tls_resumed++;
        c->state = ST_GREETING;
        c->deadline = mono_ns() + O.timeout_ns;
        set_events(c, EPOLLIN);
        return do_read(c);
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) { set_events(c, EPOLLIN); return 0; }
    if (e == SSL_ERROR_WANT_WRITE) { set_events(c, EPOLLIN | EPOLLOUT); return 0; }
    long v = SSL_get_verify_result(c->ssl);
    unsigned long ee = ERR_peek_error();
    return conn_fail(c, E_TLS, "handshake failed: %s", v != X509_V_OK ? X509_verify_cert_error_string(v)
                     : ee ? ERR_reason_error_string(ee) : "connection closed");
}

static int on_connected(struct conn *c) {
    if (!O.tls) {
        c->state = ST_GREETING;
        set_events(c, EPOLLIN);
        return 0;
    }
    struct user *u = &users[c->user];
    struct target *t = &targets[u->target];
    c->ssl = SSL_new(R.ctx);
    if (!c->ssl) return conn_fail(c, E_TLS, "SSL_new failed");
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_app_data(c->ssl, c);
    const char *sn = u->servername ? u->servername : O.servername;
    if (sn) {
        SSL_set_tlsext_host_name(c->ssl, sn);
        if (O.cafile) SSL_set1_host(c->ssl, sn);
    } else if (O.cafile) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), t->ipstr);
    }
    if (O.tls_resume && t->session) SSL_set_session(c->ssl, t->session);
    c->state = ST_HANDSHAKE;
    return do_handshake(c);
}

static void launch(int slot, uint64_t now) {
    struct conn *c = &R.conns[slot];
    c->slot = slot;
    switch (O.scenario) {
    case SC_LOGIN: c->user = (int)(R.next_user++ % nusers); break;
    default: c->user = (int)((size_t)slot % nusers); break;
    }
    c->t_start = now;
    c->deadline = now + O.timeout_ns;
    c->relaunch_at = 0;
    c->logged_in = c->caps_seen = c->store_ok = c->active = c->setup_counted = 0;
    c->seen_store[0] = 0;
    c->exists = c->done = c->cur_lit_n = 0;
    c->expect_size = O.append_size;
    c->rs = c->re = 0;
    c->evmask = 0;
    if (O.scenario == SC_NOOP) {
        c->req = O.proto == PR_IMAP ? "n NOOP\r\n" : "NOOP\r\n";
        c->req_len = strlen(c->req);
    }
    if (O.scenario == SC_FETCH && O.append_size)
        snprintf(c->cmd, sizeof c->cmd, "p APPEND INBOX {%" PRIu64 "}\r\n", O.append_size);
    if (!c->rbuf) {
        c->rcap = O.scenario == SC_FETCH ? RBUF_FETCH : RBUF_SMALL;
        c->rbuf = xmalloc(c->rcap);
    }
    c->state = ST_CONNECTING;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { conn_fail(c, E_CONNECT, "socket: %s", strerror(errno)); return; }
    c->fd = fd;
    R.open++;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = ev_data(c)};
    if (epoll_ctl(R.ep, EPOLL_CTL_ADD, fd, &ev) < 0) fatal("epoll_ctl ADD: %s", strerror(errno));
    c->evmask = EPOLLOUT;
    const struct target *t = &targets[users[c->user].target];
    if (connect(fd, (const struct sockaddr *)&t->addr, sizeof t->addr) == 0) { on_connected(c); return; }
    if (errno == EINPROGRESS) return;
    conn_fail(c, errno == ECONNREFUSED ? E_REFUSED : E_CONNECT, "connect: %s", strerror(errno));
}

static void dispatch(struct conn *c, uint32_t ev) {
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0) err = errno;
        if (err) { conn_fail(c, err == ECONNREFUSED ? E_REFUSED : E_CONNECT, "connect: %s", strerror(err)); return; }
        if (ev & EPOLLOUT) on_connected(c);
        return;
    }
    if (c->state == ST_HANDSHAKE) { do_handshake(c); return; }
    if (c->woff < c->wlen) {
        if (flush(c) < 0) return;
    } else if ((ev & EPOLLOUT) && (c->evmask & EPOLLOUT)) {
        set_events(c, EPOLLIN);                   /* SSL_read wanted to write: retry the read */
        if (c->ssl) ev |= EPOLLIN;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) do_read(c);
}

/* ---- phases -------------------------------------------------------------------------------- */

static void start_measure(uint64_t now) {
    R.phase = PH_MEASURE;
    R.ms = now;
    R.ms_set = 1;
    getrusage(RUSAGE_SELF, &R.ru_ms);
    R.measure_deadline = O.duration_ns ? now + O.duration_ns : 0;
}

static void end_measure(uint64_t now) {
    if (R.phase >= PH_DRAIN) return;
    if (!R.ms_set) { R.ms = now; R.ms_set = 1; getrusage(RUSAGE_SELF, &R.ru_ms); }
    R.me = now;
    R.me_set = 1;
    getrusage(RUSAGE_SELF, &R.ru_me);
    R.phase = PH_DRAIN;
    uint64_t drain = O.timeout_ns < 5 * NS_PER_S ? O.timeout_ns : 5 * NS_PER_S;
    R.drain_deadline = now + drain + (O.scenario == SC_LOGIN ? O.timeout_ns : 0);
    R.kick_logout = 1;
}

static void begin_runs(uint64_t now) {
    if (R.ready == 0) { end_measure(now); return; }
    if (O.warmup_ns) { R.phase = PH_WARMUP; R.warm_end = now + O.warmup_ns; }
    else start_measure(now);
    for (size_t i = 0; i < R.nslots; i++) {
        struct conn *c = &R.conns[i];
        if (c->fd >= 0 && c->state == ST_READY) {
            c->active = 1;
            R.active++;
        }
    }
    for (size_t i = 0; i < R.nslots; i++) {
        struct conn *c = &R.conns[i];
        if (c->fd >= 0 && c->state == ST_READY && c->active) send_req(c);
    }
}

static void force_finish(void) {
    for (size_t i = 0; i < R.nslots; i++) {
        struct conn *c = &R.conns[i];
        if (c->fd >= 0) { R.forced_closes++; conn_close(c); }
    }
    R.qlen = 0;
    R.phase = PH_DONE;
}

static void handle_time(uint64_t now) {
    if (R.sig != R.sig_seen) {
        R.sig_seen = R.sig;
        R.interrupted = 1;
        if (R.phase < PH_DRAIN) end_measure(now);
        else if (R.sig >= 2) force_finish();
    }
    if (R.phase == PH_WARMUP && now >= R.warm_end) start_measure(now);
    if (R.phase == PH_MEASURE && R.measure_deadline && now >= R.measure_deadline) end_measure(now);
    if (now >= R.hard_deadline && !R.hard_hit) {
        R.hard_hit = 1;
        if (R.phase < PH_DRAIN) end_measure(now);
    }
    if (R.phase == PH_DRAIN && now >= R.drain_deadline) force_finish();
    if (R.kick_start) { R.kick_start = 0; begin_runs(now); }
    if (R.kick_logout) {
        R.kick_logout = 0;
        for (size_t i = 0; i < R.nslots; i++) {
            struct conn *c = &R.conns[i];
            if (c->fd >= 0 && (c->state == ST_READY || c->state == ST_HELD)) send_logout(c);
        }
    }
    if (now >= R.next_tick) {
        R.next_tick = now + TICK_NS;
        for (size_t i = 0; i < R.nslots; i++) {
            struct conn *c = &R.conns[i];
            if (c->fd >= 0) {
                if (c->deadline && now >= c->deadline) {
                    if (c->state == ST_WAIT_EOF) { R.logout_no_close++; conn_done(c); }
                    else conn_fail(c, E_TIMEOUT, "no answer within %.1f s", (double)O.timeout_ns / 1e9);
                }
            } else if (c->relaunch_at && now >= c->relaunch_at) {
                c->relaunch_at = 0;
                if (R.phase == PH_WARMUP || R.phase == PH_MEASURE) enqueue((int)i);
            }
        }
    }
    if (R.phase == PH_DRAIN && R.open == 0) R.phase = PH_DONE;
}

static void process_queue(uint64_t now) {
    while (R.qlen) {
        int slot = R.queue[R.qhead];
        R.qhead = (R.qhead + 1) % R.nslots;
        R.qlen--;
        if (R.phase >= PH_DRAIN) continue;
        if (O.scenario == SC_LOGIN && R.phase == PH_MEASURE) {
            if (O.count && R.launched_measure >= O.count) continue;
            R.launched_measure++;
        }
        launch(slot, now);
    }
}

static int epoll_timeout_ms(uint64_t now) {
    if (R.qlen || R.kick_start || R.kick_logout || O.busy_poll) return 0;
    uint64_t next = R.next_tick;
    if (R.phase == PH_WARMUP && R.warm_end < next) next = R.warm_end;
    if (R.phase == PH_MEASURE && R.measure_deadline && R.measure_deadline < next) next = R.measure_deadline;
    if (R.phase == PH_DRAIN && R.drain_deadline < next) next = R.drain_deadline;
    if (R.hard_deadline < next) next = R.hard_deadline;
    if (next <= now) return 0;
    return (int)((next - now + NS_PER_MS - 1) / NS_PER_MS);
}

/* ------------------------------------------------------------------------------------------ */
/* setup */

static int parse_hostport(const char *s, struct sockaddr_in *sa) {
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s) return -1;
    char host[64];
    size_t hl = (size_t)(colon - s);
    if (hl >= sizeof host) return -1;
    memcpy(host, s, hl);
    host[hl] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535) return -1;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) return -1;
    if ((ntohl(sa->sin_addr.s_addr) >> 24) != 127) return -2;
    return 0;
}

static int find_target(const struct sockaddr_in *sa) {
    for (size_t i = 0; i < ntargets; i++)
        if (targets[i].addr.sin_addr.s_addr == sa->sin_addr.s_addr && targets[i].addr.sin_port == sa->sin_port)
            return (int)i;
    targets = realloc(targets, (ntargets + 1) * sizeof *targets);
    if (!targets) fatal("out of memory");
    memset(&targets[ntargets], 0, sizeof *targets);
    targets[ntargets].addr = *sa;
    inet_ntop(AF_INET, &sa->sin_addr, targets[ntargets].ipstr, sizeof targets[ntargets].ipstr);
    return (int)ntargets++;
}

/* IMAP quoted string with backslash escapes */
static size_t imap_quote(char *out, const char *s) {
    size_t n = 0;
    out[n++] = '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') out[n++] = '\\';
        out[n++] = *s;
    }
    out[n++] = '"';
    return n;
}

static void load_users(void) {
    FILE *f = fopen(O.users_file, "r");
    if (!f) usage_error("cannot read --users %s: %s", O.users_file, strerror(errno));
    char *line = NULL;
    size_t cap = 0, lineno = 0, alloc = 0;
    ssize_t len;
    struct sockaddr_in override;
    int override_target = -1;
    if (O.target) {
        int r = parse_hostport(O.target, &override);
        if (r == -2) usage_error("--target %s: only loopback addresses (127.0.0.0/8) are allowed", O.target);
        if (r < 0) usage_error("--target %s: expected IPv4:PORT", O.target);
        override_target = find_target(&override);
    }
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!len || line[0] == '#') continue;
        char *fields[5] = {0};
        int nf = 0;
        char *p = line;
        while (nf < 5) {
            fields[nf++] = p;
            char *tab = strchr(p, '\t');
            if (!tab) break;
            *tab = 0;
            p = tab + 1;
        }
        if (nf < 3 || (nf < 4 && override_target < 0))
            usage_error("%s:%zu: expected user<TAB>password<TAB>expected_store<TAB>host:port[<TAB>servername]",
                        O.users_file, lineno);
        if (strpbrk(fields[0], "\r\n\"\\ ") || !fields[0][0])
            usage_error("%s:%zu: unsupported user name", O.users_file, lineno);
        if (strpbrk(fields[1], "\r\n")) usage_error("%s:%zu: password with CR/LF", O.users_file, lineno);
        if (nusers == alloc) {
            alloc = alloc ? alloc * 2 : 64;
            users = realloc(users, alloc * sizeof *users);
            if (!users) fatal("out of memory");
        }
        struct user *u = &users[nusers];
        memset(u, 0, sizeof *u);
        u->name = strdup(fields[0]);
        const char *exp = fields[2];
        if (!strcmp(exp, "-")) exp = "";
        u->expect = strdup(exp);
        u->expect_cap = xmalloc(strlen(exp) + 16);
        strcpy(u->expect_cap, "X-STORE-");
        for (size_t i = 0; exp[i]; i++) u->expect_cap[8 + i] = (char)toupper((unsigned char)exp[i]);
        if (override_target >= 0) {
            u->target = override_target;
        } else {
            struct sockaddr_in sa;
            int r = parse_hostport(fields[3], &sa);
            if (r == -2) usage_error("%s:%zu: %s: only loopback addresses (127.0.0.0/8) are allowed", O.users_file, lineno, fields[3]);
            if (r < 0) usage_error("%s:%zu: %s: expected IPv4:PORT", O.users_file, lineno, fields[3]);
            u->target = find_target(&sa);
        }
        if (nf >= 5 && fields[4][0]) u->servername = strdup(fields[4]);
        size_t ul = strlen(fields[0]), pl = strlen(fields[1]);
        u->imap_login = xmalloc(2 * (ul + pl) + 32);
        size_t n = 0;
        memcpy(u->imap_login, "a LOGIN ", 8); n = 8;
        n += imap_quote(u->imap_login + n, fields[0]);
        u->imap_login[n++] = ' ';
        n += imap_quote(u->imap_login + n, fields[1]);
        memcpy(u->imap_login + n, "\r\n", 3); n += 2;
        u->imap_login_len = n;
        u->pop_user = xmalloc(ul + 8);
        u->pop_user_len = (size_t)sprintf(u->pop_user, "USER %s\r\n", fields[0]);
        u->pop_pass = xmalloc(pl + 8);
        u->pop_pass_len = (size_t)sprintf(u->pop_pass, "PASS %s\r\n", fields[1]);
        nusers++;
    }
    free(line);
    fclose(f);
    if (!nusers) usage_error("--users %s has no users", O.users_file);
}

static void build_append(void) {
    char hdr[512];
    int hl = snprintf(hdr, sizeof hdr,
                      "From: loadgen <loadgen@example.org>\r\nTo: bench@example.org\r\n"
                      "Subject: loadgen %" PRIu64 "-byte message\r\nDate: Mon, 23 Nov 2026 00:00:00 +0000\r\n"
                      "Message-ID: <loadgen-%" PRIu64 "-%ld@example.org>\r\nMIME-Version: 1.0\r\n"
                      "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
                      O.append_size, O.append_size, (long)getpid());
    if (O.append_size < (uint64_t)hl + 2)
        usage_error("--append-size must be at least %d bytes (the synthetic headers take %d)", hl + 2, hl);
    if (O.append_size > (1ull << 31)) usage_error("--append-size at most 2 GiB");
    size_t size = (size_t)O.append_size;
    R.append_buf = xmalloc(size + 2);
    memcpy(R.append_buf, hdr, (size_t)hl);
    size_t pos = (size_t)hl, k = 0;
    while (pos < size) {
        size_t rem = size - pos, line;
        if (rem > 160) line = 80;
        else if (rem > 80) line = rem / 2;
        else line = rem;                       /* >= 2: see the loop invariant below */
        for (size_t i = 0; i + 2 < line; i++) R.append_buf[pos + i] = (char)('A' + (k + i) % 58 % 26);
        R.append_buf[pos + line - 2] = '\r';
        R.append_buf[pos + line - 1] = '\n';
        pos += line;
        k++;
    }
    memcpy(R.append_buf + size, "\r\n", 2);   /* ends the APPEND command */
    R.append_len = size + 2;
}

static void setup_tls(void) {
    OPENSSL_init_ssl(0, NULL);
    R.ctx = SSL_CTX_new(TLS_client_method());
    if (!R.ctx) fatal("SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(R.ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(R.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                (O.scenario == SC_IDLE ? SSL_MODE_RELEASE_BUFFERS : 0));
    SSL_CTX_set_options(R.ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_read_ahead(R.ctx, 1);
    /* read-ahead buffer: several records per recv() (fewer syscalls on big fetches) */
    SSL_CTX_set_default_read_buffer_len(R.ctx, O.scenario == SC_FETCH ? 256 * 1024 : 16 * 1024 + 512);
    if (O.cafile) {
        if (SSL_CTX_load_verify_locations(R.ctx, O.cafile, NULL) != 1)
            usage_error("--cafile %s: cannot load CA certificates", O.cafile);
        SSL_CTX_set_verify(R.ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(R.ctx, SSL_VERIFY_NONE, NULL);
    }
    if (O.tls_resume) {
        SSL_CTX_set_session_cache_mode(R.ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(R.ctx, new_session_cb);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* command line */

static void help(void) {
    printf(
"usage: loadgen SCENARIO --users FILE [options]\n"
"\n"
"Load generator for IMAP/POP3 servers and proxies on loopback. Prints one JSON object on\n"
"stdout at the end; errors and progress on stderr. Exit 0 when it ran (even with errors),\n"
"2 on usage errors.\n"
"\n"
"Scenarios:\n"
"  login   C workers loop: connect, greeting, log in, check the store, log out, close;\n"
"          next user round-robin. Latency = connect start -> login OK. --count N = N logins\n"
"          (ok + failed) in total.\n"
"  noop    C connections log in once, then NOOP round trips; --count N = N per connection.\n"
"  fetch   IMAP only: C connections (default 1) log in, [APPEND], SELECT INBOX, then\n"
"          FETCH <n> BODY.PEEK[] repeatedly (n = last message, or --message); the literal\n"
"          is read and discarded; every fetched size must be equal. --count N per connection.\n"
"  idle    open N = --count sessions (default C), C logins at a time; when all are done\n"
"          print 'READY <ok> <err>' on stderr, hold them for --duration (or until SIGTERM/\n"
"          SIGINT), then log all out.\n"
"\n"
"Options:\n"
"  --users FILE          lines: user<TAB>password<TAB>expected_store<TAB>host:port[<TAB>servername]\n"
"                        host:port is where to connect for that user (IPv4, 127.0.0.0/8 only);\n"
"                        expected_store '-' = do not check; '#' lines are comments\n"
"  --target HOST:PORT    connect every user here instead (the 4th column becomes optional)\n"
"  --protocol imap|pop3  default imap\n"
"  --tls                 implicit TLS (IMAPS/POP3S)\n"
"  --cafile FILE         verify the server certificate against these CAs (name: --servername\n"
"                        or the users file's 5th column, else the IP address); without it: no\n"
"                        verification\n"
"  --servername NAME     SNI (and verified name with --cafile)\n"
"  --tls-resume          resume TLS sessions (one ticket kept per server address)\n"
"  --concurrency C       workers / connections / parallel opens (default 1)\n"
"  --duration SECONDS    measurement length; default 10 unless --count (idle: hold time,\n"
"                        default 10)\n"
"  --count N             see the scenarios; with --duration too, whichever comes first\n"
"  --warmup SECONDS      run this long before measuring (login, noop, fetch)\n"
"  --timeout SECONDS     per protocol step (connect, each command); default 10\n"
"  --no-check            do not check the store (no CAPABILITY / TOP 1 0)\n"
"  --append-size BYTES   fetch: first APPEND a synthetic message of this size, fetch it\n"
"  --message N           fetch: message number (default: the last one)\n"
"  --busy-poll           never sleep in epoll_wait (spins one core: lower, steadier RTTs, but\n"
"                        takes a CPU away from the servers; off by default)\n"
"  --max-time SECONDS    hard cap on the whole run (default: warmup + duration + 120, or 3600)\n"
"  -v, --verbose         log every error (default: the first %d)\n"
"  -h, --help            this text\n"
"\n"
"Store check: IMAP - the LOGIN OK's [CAPABILITY ...] (or an untagged CAPABILITY, else a\n"
"'c CAPABILITY' command) must list X-STORE-<EXPECTED>; POP3 - 'TOP 1 0' must show\n"
"'X-Store: <expected>'.\n"
"Error kinds: connect, refused (connection refused), tls, auth (login rejected), wrong_store,\n"
"wrong_size, timeout, closed (server closed / reset), protocol, logout, dropped (idle: the\n"
"server ended a held session).\n", MAX_ERROR_LOGS);
}

static double parse_seconds(const char *opt, const char *v) {
    char *end;
    double d = strtod(v, &end);
    if (*end || !(d >= 0) || d > 1e6) usage_error("%s: expected seconds, got '%s'", opt, v);
    return d;
}

static uint64_t parse_count(const char *opt, const char *v, uint64_t min, uint64_t max) {
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || *end || !*v || v[0] == '-' || n < min || n > max)
        usage_error("%s: expected an integer in %" PRIu64 "..%" PRIu64 ", got '%s'", opt, min, max, v);
    return n;
}

static void parse_args(int argc, char **argv) {
    enum { OPT_PROTOCOL = 256, OPT_TLS, OPT_CAFILE, OPT_SERVERNAME, OPT_USERS, OPT_TARGET, OPT_CONC,
           OPT_DURATION, OPT_COUNT, OPT_WARMUP, OPT_TIMEOUT, OPT_NOCHECK, OPT_APPEND, OPT_MESSAGE,
           OPT_MAXTIME, OPT_RESUME, OPT_BUSY };
    static const struct option opts[] = {
        {"protocol", required_argument, 0, OPT_PROTOCOL}, {"tls", no_argument, 0, OPT_TLS},
        {"cafile", required_argument, 0, OPT_CAFILE}, {"servername", required_argument, 0, OPT_SERVERNAME},
        {"users", required_argument, 0, OPT_USERS}, {"target", required_argument, 0, OPT_TARGET},
        {"concurrency", required_argument, 0, OPT_CONC}, {"duration", required_argument, 0, OPT_DURATION},
        {"count", required_argument, 0, OPT_COUNT}, {"warmup", required_argument, 0, OPT_WARMUP},
        {"timeout", required_argument, 0, OPT_TIMEOUT}, {"no-check", no_argument, 0, OPT_NOCHECK},
        {"append-size", required_argument, 0, OPT_APPEND}, {"message", required_argument, 0, OPT_MESSAGE},
        {"max-time", required_argument, 0, OPT_MAXTIME}, {"tls-resume", no_argument, 0, OPT_RESUME},
        {"busy-poll", no_argument, 0, OPT_BUSY},
        {"verbose", no_argument, 0, 'v'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    O.proto = PR_IMAP;
    O.check = 1;
    O.concurrency = -1;
    O.timeout_ns = 10 * NS_PER_S;
    double max_time = -1;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+vh", opts, NULL)) != -1 || optind < argc) {
        if (c == -1) {   /* a positional argument: the scenario (options may follow it) */
            const char *s = argv[optind++];
            int found = -1;
            for (int i = 0; i < 4; i++) if (!strcmp(s, scenario_names[i])) found = i;
            if (found < 0) usage_error("unknown scenario '%s' (login, noop, fetch, idle)", s);
            if (O.scenario != -1 && O.scenario != found) usage_error("more than one scenario");
            O.scenario = found;
            continue;
        }
        switch (c) {
        case OPT_PROTOCOL:
            if (!strcmp(optarg, "imap")) O.proto = PR_IMAP;
            else if (!strcmp(optarg, "pop3")) O.proto = PR_POP3;
            else usage_error("--protocol: imap or pop3");
            break;
        case OPT_TLS: O.tls = 1; break;
        case OPT_CAFILE: O.cafile = optarg; break;
        case OPT_SERVERNAME: O.servername = optarg; break;
        case OPT_USERS: O.users_file = optarg; break;
        case OPT_TARGET: O.target = optarg; break;
        case OPT_CONC: O.concurrency = (long)parse_count("--concurrency", optarg, 1, MAX_SLOTS); break;
        case OPT_DURATION:
            O.duration_ns = (uint64_t)(parse_seconds("--duration", optarg) * 1e9);
            O.duration_given = 1;
            if (!O.duration_ns) usage_error("--duration must be > 0");
            break;
        case OPT_COUNT: O.count = parse_count("--count", optarg, 1, UINT64_MAX / 2); break;
        case OPT_WARMUP: O.warmup_ns = (uint64_t)(parse_seconds("--warmup", optarg) * 1e9); break;
        case OPT_TIMEOUT:
            O.timeout_ns = (uint64_t)(parse_seconds("--timeout", optarg) * 1e9);
            if (O.timeout_ns < NS_PER_MS) usage_error("--timeout must be at least 0.001");
            break;
        case OPT_NOCHECK: O.check = 0; break;
        case OPT_APPEND: O.append_size = parse_count("--append-size", optarg, 1, 1ull << 31); break;
        case OPT_MESSAGE: O.message = parse_count("--message", optarg, 1, UINT32_MAX); break;
        case OPT_MAXTIME: max_time = parse_seconds("--max-time", optarg); break;
        case OPT_RESUME: O.tls_resume = 1; break;
        case OPT_BUSY: O.busy_poll = 1; break;
        case 'v': O.verbose = 1; break;
        case 'h': help(); exit(0);
        default:
            usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (O.scenario < 0) usage_error("no scenario given");
    if (!O.users_file) usage_error("--users FILE is required");
    if (O.concurrency < 0) O.concurrency = 1;
    if (O.scenario == SC_FETCH && O.proto != PR_IMAP) usage_error("fetch is IMAP only");
    if ((O.append_size || O.message) && O.scenario != SC_FETCH) usage_error("--append-size/--message: fetch only");
    if ((O.cafile || O.servername || O.tls_resume) && !O.tls) usage_error("--cafile/--servername/--tls-resume need --tls");
    if (O.scenario == SC_IDLE) {
        if (!O.count) O.count = (uint64_t)O.concurrency;
        if (O.count > MAX_SLOTS) usage_error("idle: at most %d sessions", MAX_SLOTS);
        if (!O.duration_ns) O.duration_ns = 10 * NS_PER_S;
        if (O.warmup_ns) usage_error("idle has no warmup");
    } else if (!O.duration_ns && !O.count) {
        O.duration_ns = 10 * NS_PER_S;
    }
    if (max_time >= 0) O.max_time_ns = (uint64_t)(max_time * 1e9);
    else if (O.duration_given || !O.count) O.max_time_ns = O.warmup_ns + O.duration_ns + 120 * NS_PER_S;
    else O.max_time_ns = 3600 * NS_PER_S;
    if (!O.max_time_ns) usage_error("--max-time must be > 0");
}

/* ------------------------------------------------------------------------------------------ */
/* report */

static double tv_s(struct timeval tv) { return (double)tv.tv_sec + (double)tv.tv_usec / 1e6; }

static void print_latency(const char *name, struct samples *s) {
    qsort(s->v, s->n, sizeof *s->v, cmp_u64);
    printf(",\"%s\":{\"samples\":%" PRIu64 ",\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,\"max\":%.2f,\"mean\":%.2f}",
           name, s->seen, pct_us(s, 0.50), pct_us(s, 0.90), pct_us(s, 0.99), (double)s->max / 1000.0,
           s->seen ? s->sum / (double)s->seen / 1000.0 : 0.0);
}

static void report(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (!R.ms_set) R.ms = R.me = R.start;
    if (!R.me_set) { R.me = mono_ns(); R.ru_me = ru; }
    double elapsed = (double)(R.me - R.ms) / 1e9;
    double win_cpu = (tv_s(R.ru_me.ru_utime) + tv_s(R.ru_me.ru_stime)) - (tv_s(R.ru_ms.ru_utime) + tv_s(R.ru_ms.ru_stime));
    if (!R.ms_set) win_cpu = 0;
    uint64_t etotal = 0;
    for (int i = 0; i < E_NKINDS; i++) etotal += R.err[i];

    printf("{\"scenario\":\"%s\",\"protocol\":\"%s\",\"tls\":%s,\"concurrency\":%ld",
           scenario_names[O.scenario], O.proto == PR_IMAP ? "imap" : "pop3", O.tls ? "true" : "false", O.concurrency);
    printf(",\"warmup_s\":%.3f", (double)O.warmup_ns / 1e9);
    if (O.duration_ns) printf(",\"duration_s\":%.3f", (double)O.duration_ns / 1e9);
    else printf(",\"duration_s\":null");
    if (O.count) printf(",\"count\":%" PRIu64, O.count);
    else printf(",\"count\":null");
    printf(",\"users\":%zu,\"targets\":%zu", nusers, ntargets);
    printf(",\"elapsed_s\":%.6f,\"ok\":%" PRIu64 ",\"errors\":{", elapsed, R.ok);
    for (int i = 0; i < E_NKINDS; i++) printf("%s\"%s\":%" PRIu64, i ? "," : "", err_names[i], R.err[i]);
    printf("},\"error_total\":%" PRIu64, etotal);
    printf(",\"uncounted\":{\"ok\":%" PRIu64 ",\"errors\":%" PRIu64 "}", R.uncounted_ok, R.uncounted_err);

    switch (O.scenario) {
    case SC_LOGIN:
        printf(",\"rate_per_s\":%.2f", elapsed > 0 ? (double)R.ok / elapsed : 0.0);
        print_latency("latency_us", &R.lat);
        break;
    case SC_NOOP:
        printf(",\"connections_ok\":%ld,\"round_trips\":%" PRIu64 ",\"rtt_per_s\":%.2f", R.ready, R.ok,
               elapsed > 0 ? (double)R.ok / elapsed : 0.0);
        print_latency("rtt_us", &R.lat);
        break;
    case SC_FETCH:
        printf(",\"connections_ok\":%ld,\"appended\":%s,\"message\":%" PRIu64 ",\"message_size\":%" PRIu64 ",\"mixed_sizes\":%s"
               ",\"fetches\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"mb_per_s\":%.3f,\"fetches_per_s\":%.2f",
               R.ready, R.appended ? "true" : "false", R.msgno, R.expect_size, R.mixed_sizes ? "true" : "false", R.ok, R.bytes,
               elapsed > 0 ? (double)R.bytes / elapsed / 1e6 : 0.0, elapsed > 0 ? (double)R.ok / elapsed : 0.0);
        print_latency("fetch_us", &R.lat);
        break;
    case SC_IDLE:
        printf(",\"sessions_requested\":%" PRIu64 ",\"sessions_ok\":%" PRIu64 ",\"sessions_err\":%ld"
               ",\"open_s\":%.3f,\"held_s\":%.3f,\"dropped\":%" PRIu64 ",\"nofile_limit\":%llu",
               O.count, R.ok, R.setup_err, (double)(R.ms - R.start) / 1e9, elapsed, R.err[E_DROPPED],
               (unsigned long long)R.nofile);
        print_latency("login_latency_us", &R.lat);
        break;
    }
    printf(",\"logout_ok\":%" PRIu64 ",\"logout_no_close\":%" PRIu64 ",\"forced_closes\":%" PRIu64,
           R.logout_ok, R.logout_no_close, R.forced_closes);
    if (O.tls) printf(",\"tls_handshakes\":%" PRIu64 ",\"tls_resumed\":%" PRIu64, R.tls_handshakes, R.tls_resumed);
    double cpu = tv_s(ru.ru_utime) + tv_s(ru.ru_stime);
    printf(",\"self_cpu_s\":%.3f,\"self_cpu_user_s\":%.3f,\"self_cpu_sys_s\":%.3f,\"wall_s\":%.3f"
           ",\"window_cpu_s\":%.3f,\"window_cpu_util\":%.4f,\"cpu_us_per_op\":%.2f,\"max_rss_kb\":%ld",
           cpu, tv_s(ru.ru_utime), tv_s(ru.ru_stime), (double)(mono_ns() - R.start) / 1e9, win_cpu,
           elapsed > 0 ? win_cpu / elapsed : 0.0, R.ok ? win_cpu * 1e6 / (double)R.ok : 0.0, ru.ru_maxrss);
    printf(",\"interrupted\":%s,\"max_time_reached\":%s}\n", R.interrupted ? "true" : "false",
           R.hard_hit ? "true" : "false");
    fflush(stdout);
}

/* ------------------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    O.scenario = -1;
    parse_args(argc, argv);
    load_users();
    if (O.scenario == SC_FETCH && O.append_size) { build_append(); R.expect_size = O.append_size; }
    if (O.tls) setup_tls();

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }
        getrlimit(RLIMIT_NOFILE, &rl);
        R.nofile = rl.rlim_cur;
        size_t need = (size_t)(O.scenario == SC_IDLE ? O.count : (uint64_t)O.concurrency) + 16;
        if (need > R.nofile)
            fprintf(stderr, "loadgen: warning: %zu descriptors needed, RLIMIT_NOFILE is %llu\n", need,
                    (unsigned long long)R.nofile);
    }

    struct sigaction sa = {0};
    sa.sa_handler = handle_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    R.ep = epoll_create1(EPOLL_CLOEXEC);
    if (R.ep < 0) fatal("epoll_create1: %s", strerror(errno));
    R.nslots = O.scenario == SC_IDLE ? (size_t)O.count : (size_t)O.concurrency;
    R.conns = xmalloc(R.nslots * sizeof *R.conns);
    R.queue = xmalloc(R.nslots * sizeof *R.queue);
    for (size_t i = 0; i < R.nslots; i++) { R.conns[i].fd = -1; R.conns[i].slot = (int)i; }
    samples_init(&R.lat, O.scenario == SC_LOGIN || O.scenario == SC_IDLE ? 65536 : (1u << 20));

    R.start = mono_ns();
    R.hard_deadline = R.start + O.max_time_ns;
    R.next_tick = R.start + TICK_NS;
    if (O.scenario == SC_LOGIN) {
        if (O.warmup_ns) { R.phase = PH_WARMUP; R.warm_end = R.start + O.warmup_ns; }
        else start_measure(R.start);
        for (size_t i = 0; i < R.nslots; i++) enqueue((int)i);
    } else if (O.scenario == SC_IDLE) {
        R.phase = PH_SETUP;
        size_t first = (size_t)O.concurrency < R.nslots ? (size_t)O.concurrency : R.nslots;
        for (size_t i = 0; i < first; i++) enqueue((int)i);
        R.launched = (long)first;
    } else {
        R.phase = PH_SETUP;
        for (size_t i = 0; i < R.nslots; i++) enqueue((int)i);
    }

    struct epoll_event evs[512];
    while (R.phase != PH_DONE) {
        uint64_t now = mono_ns();
        handle_time(now);
        if (R.phase == PH_DONE) break;
        process_queue(now);
        int n = epoll_wait(R.ep, evs, 512, epoll_timeout_ms(mono_ns()));
        if (n < 0) {
            if (errno == EINTR) continue;
            fatal("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            uint32_t slot = (uint32_t)evs[i].data.u64, gen = (uint32_t)(evs[i].data.u64 >> 32);
            if (slot >= R.nslots) continue;
            struct conn *c = &R.conns[slot];
            if (c->fd < 0 || c->gen != gen) continue;   /* closed or reused in this batch */
            dispatch(c, evs[i].events);
        }
    }
    report();
    return 0;
}
