// tcp-pingpong: the physical floor of an NVMe/TCP 4 KiB read at queue depth 1 on this machine.
//
// What it measures: round trips of a busy-polling TCP ping-pong over loopback with NVMe/TCP's
// sizes. The client sends 72 bytes (a command capsule PDU: 8-byte header + 64-byte command);
// the server answers 24 + 4096 bytes (a C2HData PDU header and one 4 KiB block). Both sides poll
// with non-blocking recv and never sleep in the kernel, as Keel's reactors do, and set
// TCP_NODELAY. There is no NVMe parsing and no storage: whatever a target adds to this round
// trip at QD 1 is its own cost (docs/ARCHITECTURE.md §8.6; the goal is QD 1 within 10% of it).
// With --blocking both sides use blocking reads instead, to show what a sleep/wake costs.
//
// The server is pinned to core 0 and the client to core 1 (the target/client placement of every
// loopback benchmark in perf/README.md); --server-cpu/--client-cpu change that. Run it on an
// otherwise quiet machine, in the same session as the figures it calibrates.
//
// Build and run:
//   cc -O2 -Wall -Wextra -o /tmp/tcp-pingpong perf/calibrate/tcp-pingpong.c
//   /tmp/tcp-pingpong [ROUND_TRIPS [PORT]] [--blocking] [--server-cpu N] [--client-cpu N]
// Defaults: 300000 round trips, port 5555 on 127.0.0.1. Prints the round trips per second and
// the average round trip in microseconds; exits non-zero on any error.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum {
    REQ_BYTES = 8 + 64,     // capsule command PDU: common header + SQE
    RSP_BYTES = 24 + 4096,  // C2HData PDU header + one 4 KiB block
};

struct options {
    long rounds;
    int port;
    int blocking;
    int server_cpu;
    int client_cpu;
};

static void usage(const char *prog) {
    fprintf(stderr,
            "usage: %s [ROUND_TRIPS [PORT]] [--blocking] [--server-cpu N] [--client-cpu N]\n",
            prog);
    exit(2);
}

static long parse_num(const char *s, long min, long max, const char *prog) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "%s: bad number '%s' (expected %ld..%ld)\n", prog, s, min, max);
        usage(prog);
    }
    return v;
}

static struct options parse_args(int argc, char **argv) {
    struct options o = {.rounds = 300000, .port = 5555, .server_cpu = 0, .client_cpu = 1};
    int positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--blocking")) {
            o.blocking = 1;
        } else if (!strcmp(a, "--server-cpu") && i + 1 < argc) {
            o.server_cpu = (int)parse_num(argv[++i], 0, CPU_SETSIZE - 1, argv[0]);
        } else if (!strcmp(a, "--client-cpu") && i + 1 < argc) {
            o.client_cpu = (int)parse_num(argv[++i], 0, CPU_SETSIZE - 1, argv[0]);
        } else if (a[0] == '-') {
            usage(argv[0]);
        } else if (positional == 0) {
            o.rounds = parse_num(a, 1, 1000000000L, argv[0]);
            positional++;
        } else if (positional == 1) {
            o.port = (int)parse_num(a, 1, 65535, argv[0]);
            positional++;
        } else {
            usage(argv[0]);
        }
    }
    return o;
}

static int pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        fprintf(stderr, "cannot pin to cpu %d: %s\n", cpu, strerror(errno));
        return -1;
    }
    return 0;
}

// Reads exactly n bytes. Busy-polls (MSG_DONTWAIT) unless blocking is set.
// Returns 0 when done, -1 on error or when the peer closed the connection.
static int recv_all(int fd, char *buf, size_t n, int blocking) {
    size_t got = 0;
    int flags = blocking ? 0 : MSG_DONTWAIT;
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, flags);
        if (r > 0) {
            got += (size_t)r;
        } else if (r == 0) {
            return -1;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

// Writes exactly n bytes (loopback takes them at once; the loop covers a short write).
static int send_all(int fd, const char *buf, size_t n) {
    size_t sent = 0;
    while (sent < n) {
        ssize_t w = send(fd, buf + sent, n - sent, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

static void set_nodelay(int fd) {
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        perror("setsockopt(TCP_NODELAY)");
}

// The server: answers every request with a response until the client closes.
static int serve(int listener, const struct options *o) {
    static char buf[RSP_BYTES];
    if (pin_to(o->server_cpu) != 0)
        return 1;
    int c = accept(listener, NULL, NULL);
    if (c < 0) {
        perror("accept");
        return 1;
    }
    close(listener);
    set_nodelay(c);
    while (recv_all(c, buf, REQ_BYTES, o->blocking) == 0) {
        if (send_all(c, buf, RSP_BYTES) != 0) {
            perror("server send");
            return 1;
        }
    }
    close(c);
    return 0;
}

int main(int argc, char **argv) {
    struct options o = parse_args(argc, argv);
    static char buf[RSP_BYTES];
    memset(buf, 0x5a, sizeof buf);

    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0) {
        perror("socket");
        return 1;
    }
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o.port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 1) != 0) {
        fprintf(stderr, "cannot listen on 127.0.0.1:%d: %s\n", o.port, strerror(errno));
        return 1;
    }

    pid_t server = fork();
    if (server < 0) {
        perror("fork");
        return 1;
    }
    if (server == 0)
        _exit(serve(listener, &o));
    close(listener);

    int rc = 1;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) {
        perror("socket");
        goto out;
    }
    if (pin_to(o.client_cpu) != 0)
        goto out;
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("connect");
        goto out;
    }
    set_nodelay(s);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < o.rounds; i++) {
        if (send_all(s, buf, REQ_BYTES) != 0 || recv_all(s, buf, RSP_BYTES, o.blocking) != 0) {
            fprintf(stderr, "round trip %ld failed: %s\n", i, strerror(errno));
            goto out;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%s ping-pong %d B out / %d B back, cpu %d -> cpu %d: %ld round trips in %.3f s: "
           "%.0f round trips/s, average %.2f us\n",
           o.blocking ? "blocking" : "busy-polling", REQ_BYTES, RSP_BYTES, o.client_cpu,
           o.server_cpu, o.rounds, secs, (double)o.rounds / secs, secs / (double)o.rounds * 1e6);
    rc = 0;

out:
    if (s >= 0)
        close(s);  // the server sees end of stream and exits
    int status = 0;
    if (rc != 0)
        kill(server, SIGTERM);
    if (waitpid(server, &status, 0) == server && rc == 0 &&
        !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        fprintf(stderr, "server failed\n");
        rc = 1;
    }
    return rc;
}
