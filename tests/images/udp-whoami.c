/*
 * udp-whoami PORT: answers every UDP datagram on PORT with the host name, which in a pod
 * is the pod's name. The UDP counterpart of the busybox httpd the Service tests use:
 * busybox's nc has no UDP mode, so tests/tests/services.rs builds this with `cc -static`
 * (the image has no libc) and mounts it into the pods with a hostPath volume.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* As PID 1 of its container it would ignore SIGTERM without a handler. */
static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    signal(SIGTERM, on_term);
    char name[256] = {0};
    if (gethostname(name, sizeof name - 1) != 0) {
        perror("gethostname");
        return 1;
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) {
        perror("socket");
        return 1;
    }
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(argv[1]));
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("bind");
        return 1;
    }
    for (;;) {
        char buf[2048];
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        if (recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len) < 0)
            continue;
        sendto(s, name, strlen(name), 0, (struct sockaddr *)&peer, len);
    }
}
