/* A tiny TCP server for stratus's compute tests and benchmarks, built statically into the
 * stratus-test/busybox image (busybox's nc serves one connection at a time).
 *
 *   tcpd echo PORT   echoes every connection's bytes back until it half-closes
 *   tcpd sink PORT   reads and discards every connection's bytes
 *
 * One process per connection; a backlog of 4096. */
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char buf[1 << 20];

static void serve(int fd, int echo) {
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break;
        if (!echo) continue;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, n - off);
            if (w <= 0) _exit(1);
            off += w;
        }
    }
    shutdown(fd, SHUT_WR);
    close(fd);
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "echo") && strcmp(argv[1], "sink"))) {
        fprintf(stderr, "usage: tcpd echo|sink PORT\n");
        return 2;
    }
    int echo = strcmp(argv[1], "echo") == 0;
    signal(SIGCHLD, SIG_IGN);
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4096)) {
        perror("tcpd");
        return 1;
    }
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        pid_t p = fork();
        if (p == 0) {
            close(s);
            serve(c, echo);
        }
        close(c);
    }
}
