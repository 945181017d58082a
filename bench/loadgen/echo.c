/*
 * echo: a ping-pong load generator for echo servers, for the netplugins
 * benchmark suite (bench/).  Built at run time with the machine's cc.
 *
 * N connections to HOST:PORT; each sends one message of SIZE bytes and waits
 * for the whole echo before sending the next.  After WARMUP seconds it counts
 * requests, bytes and per-request latency for DURATION seconds, then prints
 * one JSON object and exits.  With --framing blocks every message carries a
 * 4-byte big-endian length prefix (the np-echo "blocks" framing).
 *
 * With --request TEXT --until BYTE it is a request-response generator
 * instead: each message is TEXT (SIZE and --framing are ignored), and the
 * answer is complete at the first BYTE received (the np-zen protocol: send
 * "Beautiful is better than?", read up to the '.' of "Ugly.").  --expect
 * TEXT counts an answer of another length as a mismatch.
 *
 * Output on stdout, one JSON object per line:
 *   {"event": "measuring"}            when the measured window opens
 *   {"event": "result", ...}          when it closes
 * so the caller can sample the server's CPU time over the same window.
 *
 * Every loop is bounded in time: the run ends at WARMUP + DURATION seconds
 * whatever the server does, and an alarm kills the process if even that
 * fails.  Only numeric IPv4 addresses are accepted: the suite targets
 * 127.0.0.1 and nothing else.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/*
 * Latency histogram, HdrHistogram-style: values below 128 ns are exact,
 * above that each power of two is split into 64 buckets (under 1.6 % error),
 * so recording is O(1) and memory is fixed whatever the run length.
 */
#define SUB_BUCKETS 64
#define MAX_SHIFT 40
#define N_BUCKETS (128 + MAX_SHIFT * SUB_BUCKETS)

static uint64_t histogram[N_BUCKETS];

static int bucketOf(uint64_t ns)
{
    if (ns < 128)
        return (int)ns;
    int msb = 63 - __builtin_clzll(ns);
    int shift = msb - 6;
    if (shift > MAX_SHIFT)
        return N_BUCKETS - 1;
    return 128 + (shift - 1) * SUB_BUCKETS + (int)((ns >> shift) - 64);
}

/* The midpoint of a bucket, in nanoseconds. */
static double bucketValue(int index)
{
    if (index < 128)
        return index;
    int shift = (index - 128) / SUB_BUCKETS + 1;
    uint64_t mantissa = (uint64_t)((index - 128) % SUB_BUCKETS + 64);
    double low = (double)(mantissa << shift);
    double high = (double)((mantissa + 1) << shift);
    return (low + high) / 2;
}

static double percentile(uint64_t total, double fraction)
{
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)(fraction * (double)total + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < N_BUCKETS; i++) {
        seen += histogram[i];
        if (seen >= rank)
            return bucketValue(i);
    }
    return bucketValue(N_BUCKETS - 1);
}

struct connection {
    int fd;
    size_t sent;      /* bytes of the current message written */
    size_t received;  /* bytes of its echo read */
    uint64_t started; /* when its first byte went out, ns */
    uint32_t interest; /* the epoll events asked for */
    int alive;
};

/*
 * Whether a received chunk matches what was sent.  Small chunks are compared
 * whole; big ones at both ends only, which catches lost, extra or reordered
 * bytes while keeping a 64 KiB comparison from costing the load generator a
 * fifth of its time per message.
 */
static int echoed(const unsigned char *got, const unsigned char *sent, size_t n)
{
    if (n <= 4096)
        return memcmp(got, sent, n) == 0;
    return memcmp(got, sent, 64) == 0 && memcmp(got + n - 64, sent + n - 64, 64) == 0;
}

static uint64_t now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpuSeconds(void)
{
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 +
           (double)usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

static void usage(const char *name)
{
    fprintf(stderr,
            "usage: %s --port PORT [--host 127.0.0.1] [--connections 50]\n"
            "       [--size 1024] [--warmup 1] [--duration 5]"
            " [--framing raw|blocks]\n"
            "       [--request TEXT --until BYTE [--expect TEXT]]\n",
            name);
    exit(2);
}

static double numberArgument(const char *flag, const char *value, double low,
                             double high)
{
    char *end;
    double number = strtod(value, &end);
    if (*value == '\0' || *end != '\0' || !(number >= low && number <= high)) {
        fprintf(stderr, "%s: expected a number from %g to %g, not %s\n", flag,
                low, high, value);
        exit(2);
    }
    return number;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0;
    int count = 50;
    size_t size = 1024;
    double warmup = 1, duration = 5;
    int blocks = 0;
    const char *request = NULL, *expect = NULL;
    int until = -1;

    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (i + 1 >= argc)
            usage(argv[0]);
        const char *value = argv[++i];
        if (!strcmp(flag, "--host"))
            host = value;
        else if (!strcmp(flag, "--port"))
            port = (int)numberArgument(flag, value, 1, 65535);
        else if (!strcmp(flag, "--connections"))
            count = (int)numberArgument(flag, value, 1, 10000);
        else if (!strcmp(flag, "--size"))
            size = (size_t)numberArgument(flag, value, 1, 64 << 20);
        else if (!strcmp(flag, "--warmup"))
            warmup = numberArgument(flag, value, 0, 600);
        else if (!strcmp(flag, "--duration"))
            duration = numberArgument(flag, value, 0.1, 3600);
        else if (!strcmp(flag, "--framing")) {
            if (!strcmp(value, "blocks"))
                blocks = 1;
            else if (strcmp(value, "raw"))
                usage(argv[0]);
        } else if (!strcmp(flag, "--request") && *value)
            request = value;
        else if (!strcmp(flag, "--until") && strlen(value) == 1)
            until = (unsigned char)value[0];
        else if (!strcmp(flag, "--expect") && *value)
            expect = value;
        else
            usage(argv[0]);
    }
    if (port == 0 || (request == NULL) != (until < 0))
        usage(argv[0]);
    if (request) {
        size = strlen(request);
        blocks = 0;
    }

    /* The last resort if the loop below were ever stuck. */
    alarm((unsigned)(warmup + duration) + 30);

    /* The message: an optional length prefix, then a recognisable pattern. */
    size_t length = size + (blocks ? 4 : 0);
    /* Room for an answer longer than the request, in request mode. */
    size_t room = request && length < 65536 ? 65536 : length;
    unsigned char *message = malloc(length);
    unsigned char *scratch = malloc(room);
    if (!message || !scratch) {
        perror("malloc");
        return 1;
    }
    unsigned char *payload = message + (blocks ? 4 : 0);
    if (blocks) {
        message[0] = (unsigned char)(size >> 24);
        message[1] = (unsigned char)(size >> 16);
        message[2] = (unsigned char)(size >> 8);
        message[3] = (unsigned char)size;
    }
    for (size_t i = 0; i < size; i++)
        payload[i] = request ? (unsigned char)request[i]
                             : (unsigned char)('a' + i % 26);

    struct sockaddr_in address = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &address.sin_addr) != 1) {
        fprintf(stderr, "--host must be a numeric IPv4 address: %s\n", host);
        return 2;
    }

    int poller = epoll_create1(0);
    struct connection *connections = calloc((size_t)count, sizeof *connections);
    if (poller < 0 || !connections) {
        perror("setup");
        return 1;
    }
    for (int i = 0; i < count; i++) {
        struct connection *c = &connections[i];
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0 ||
            connect(c->fd, (struct sockaddr *)&address, sizeof address) < 0) {
            fprintf(stderr, "connection %d: %s\n", i, strerror(errno));
            return 1;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        c->alive = 1;
        c->interest = EPOLLIN | EPOLLOUT;
        struct epoll_event event = {.events = c->interest,
                                    .data.u32 = (uint32_t)i};
        epoll_ctl(poller, EPOLL_CTL_ADD, c->fd, &event);
    }

    uint64_t start = now();
    uint64_t measureFrom = start + (uint64_t)(warmup * 1e9);
    uint64_t measureUntil = measureFrom + (uint64_t)(duration * 1e9);
    int measuring = warmup == 0;
    if (measuring) {
        printf("{\"event\": \"measuring\"}\n");
        fflush(stdout);
    }
    double cpuAtStart = measuring ? cpuSeconds() : 0;
    uint64_t requests = 0, bytes = 0, recorded = 0, errors = 0, mismatches = 0;
    int alive = count;
    struct epoll_event events[256];

    for (;;) {
        uint64_t t = now();
        if (!measuring && t >= measureFrom) {
            measuring = 1;
            cpuAtStart = cpuSeconds();
            printf("{\"event\": \"measuring\"}\n");
            fflush(stdout);
        }
        if (t >= measureUntil || alive == 0)
            break;
        uint64_t next = measuring ? measureUntil : measureFrom;
        int timeout = (int)((next - t) / 1000000) + 1;
        int ready = epoll_wait(poller, events, 256, timeout);
        if (ready < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        for (int k = 0; k < ready; k++) {
            struct connection *c = &connections[events[k].data.u32];
            if (!c->alive)
                continue;
            uint32_t what = events[k].events;
            int failed = (what & (EPOLLERR | EPOLLHUP)) != 0;
            /* One read and at most one write per wake-up: level-triggered
               epoll reports whatever is left, and a read that could only
               say EAGAIN would be a wasted system call per message. */
            int answered = 0;
            if (!failed && (what & EPOLLIN)) {
                ssize_t n = recv(c->fd, scratch,
                                 request ? room : length - c->received, 0);
                if (n > 0) {
                    if (request)
                        answered = memchr(scratch, until, (size_t)n) != NULL;
                    else if (!echoed(scratch, message + c->received, (size_t)n))
                        mismatches++, failed = 1;
                    c->received += (size_t)n;
                } else if (n == 0 || (errno != EAGAIN && errno != EINTR))
                    failed = 1;
            }
            if (!failed && answered && expect && c->received != strlen(expect))
                mismatches++, failed = 1;
            if (!failed && (request ? answered : c->received == length)) {
                uint64_t finished = now();
                if (measuring && finished < measureUntil) {
                    requests++;
                    bytes += size;
                    histogram[bucketOf(finished - c->started)]++;
                    recorded++;
                }
                c->sent = c->received = 0;
            }
            if (!failed && c->sent < length &&
                (c->sent == 0 || (what & EPOLLOUT))) {
                if (c->sent == 0)
                    c->started = now();
                ssize_t n = send(c->fd, message + c->sent, length - c->sent,
                                 MSG_NOSIGNAL);
                if (n > 0)
                    c->sent += (size_t)n;
                else if (n < 0 && errno != EAGAIN && errno != EINTR)
                    failed = 1;
            }
            if (failed) {
                errors++;
                c->alive = 0;
                alive--;
                epoll_ctl(poller, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                continue;
            }
            /* Ask for EPOLLOUT only while part of a message waits to go out:
               otherwise it would fire on every pass. */
            uint32_t wanted = EPOLLIN | (c->sent < length ? EPOLLOUT : 0);
            if (wanted != c->interest) {
                struct epoll_event event = {.events = wanted,
                                            .data.u32 = events[k].data.u32};
                epoll_ctl(poller, EPOLL_CTL_MOD, c->fd, &event);
                c->interest = wanted;
            }
        }
    }

    double elapsed = (double)(now() - measureFrom) / 1e9;
    if (elapsed > duration)
        elapsed = duration;
    double cpu = measuring ? cpuSeconds() - cpuAtStart : 0;
    printf("{\"event\": \"result\", \"connections\": %d, \"size\": %zu, "
           "\"framing\": \"%s\", \"duration\": %.6f, \"requests\": %llu, "
           "\"bytes\": %llu, \"p50_us\": %.3f, \"p90_us\": %.3f, "
           "\"p99_us\": %.3f, \"max_us\": %.3f, \"errors\": %llu, "
           "\"mismatches\": %llu, \"cpu_seconds\": %.6f}\n",
           count, size, blocks ? "blocks" : "raw", measuring ? elapsed : 0.0,
           (unsigned long long)requests, (unsigned long long)bytes,
           percentile(recorded, 0.50) / 1e3, percentile(recorded, 0.90) / 1e3,
           percentile(recorded, 0.99) / 1e3, percentile(recorded, 1.0) / 1e3,
           (unsigned long long)errors, (unsigned long long)mismatches, cpu);
    fflush(stdout);
    for (int i = 0; i < count; i++)
        if (connections[i].alive)
            close(connections[i].fd);
    return errors ? 3 : 0;
}
