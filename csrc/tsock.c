/*
 * tsock.c - SO_TIMESTAMPING UDP sockets, TX stamps from the error queue,
 * interface timestamping capabilities and hardware stamping switches.
 */
#define _GNU_SOURCE
#include "tsock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/errqueue.h>
#include <linux/ethtool.h>
#include <linux/net_tstamp.h>
#include <linux/sockios.h>

#ifndef SO_TIMESTAMPING_OLD
#define SO_TIMESTAMPING_OLD 37
#endif
#ifndef SO_TIMESTAMPING_NEW
#define SO_TIMESTAMPING_NEW 65
#endif
#ifndef SO_EE_ORIGIN_TIMESTAMPING
#define SO_EE_ORIGIN_TIMESTAMPING 4
#endif

#define SKW_CONTROL_LEN 512

static int64_t now_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Milliseconds for poll() from a nanosecond budget, rounding up so a short
 * wait is not a busy loop of zero-timeout polls. */
static int poll_ms(int64_t left_ns)
{
    if (left_ns <= 0)
        return 0;
    int64_t ms = (left_ns + 999999) / 1000000;
    return ms > 1000000 ? 1000000 : (int)ms;
}

int skw_tsock_open(struct skw_tsock *s, int family)
{
    if (family != AF_INET && family != AF_INET6)
        return -EAFNOSUPPORT;
    memset(s, 0, sizeof(*s));
    s->fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
    if (s->fd < 0)
        return -errno;
    s->family = family;
    s->mode = SKW_TS_NONE;
    if (family == AF_INET6) {
        int off = 0; /* accept IPv4 peers as v4-mapped too */
        setsockopt(s->fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
    }
    return 0;
}

int skw_tsock_close(struct skw_tsock *s)
{
    int rc = 0;
    if (s->fd >= 0 && close(s->fd) != 0)
        rc = -errno;
    s->fd = -1;
    return rc;
}

int skw_tsock_addr(int family, const char *ip, int port,
                   struct sockaddr_storage *out, socklen_t *len_out)
{
    memset(out, 0, sizeof(*out));
    if (port < 0 || port > 65535)
        return -EINVAL;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)out;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, ip, &a->sin_addr) != 1)
            return -EINVAL;
        *len_out = sizeof(*a);
        return 0;
    }
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
        struct in_addr v4;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, ip, &a->sin6_addr) != 1) {
            if (inet_pton(AF_INET, ip, &v4) != 1)
                return -EINVAL;
            /* ::ffff:a.b.c.d */
            a->sin6_addr.s6_addr[10] = 0xff;
            a->sin6_addr.s6_addr[11] = 0xff;
            memcpy(&a->sin6_addr.s6_addr[12], &v4, 4);
        }
        *len_out = sizeof(*a);
        return 0;
    }
    return -EAFNOSUPPORT;
}

int skw_tsock_addr_str(const struct sockaddr_storage *a, char *ip, size_t iplen,
                       int *port)
{
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)a;
        if (!inet_ntop(AF_INET, &v4->sin_addr, ip, (socklen_t)iplen))
            return -errno;
        *port = ntohs(v4->sin_port);
        return 0;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)a;
        const uint8_t *b = v6->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(b, mapped, 12) == 0) {
            if (!inet_ntop(AF_INET, b + 12, ip, (socklen_t)iplen))
                return -errno;
        } else if (!inet_ntop(AF_INET6, &v6->sin6_addr, ip, (socklen_t)iplen)) {
            return -errno;
        }
        *port = ntohs(v6->sin6_port);
        return 0;
    }
    return -EAFNOSUPPORT;
}

int skw_tsock_bind(struct skw_tsock *s, const char *ip, int port)
{
    struct sockaddr_storage a;
    socklen_t len;
    int rc = skw_tsock_addr(s->family, ip, port, &a, &len);
    if (rc)
        return rc;
    if (bind(s->fd, (struct sockaddr *)&a, len) != 0)
        return -errno;
    return 0;
}

int skw_tsock_bind_device(struct skw_tsock *s, const char *ifname)
{
    if (setsockopt(s->fd, SOL_SOCKET, SO_BINDTODEVICE, ifname,
                   (socklen_t)strlen(ifname)) != 0)
        return -errno;
    return 0;
}

int skw_tsock_local_port(struct skw_tsock *s, int *port)
{
    struct sockaddr_storage a;
    socklen_t len = sizeof(a);
    char ip[INET6_ADDRSTRLEN];
    if (getsockname(s->fd, (struct sockaddr *)&a, &len) != 0)
        return -errno;
    return skw_tsock_addr_str(&a, ip, sizeof(ip), port);
}

uint32_t skw_tsock_mode_flags(int mode)
{
    uint32_t sw = SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_RX_SOFTWARE |
                  SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_OPT_ID |
                  SOF_TIMESTAMPING_OPT_TSONLY;
    switch (mode) {
    case SKW_TS_SOFTWARE:
        return sw;
    case SKW_TS_HARDWARE:
        return sw | SOF_TIMESTAMPING_TX_HARDWARE | SOF_TIMESTAMPING_RX_HARDWARE |
               SOF_TIMESTAMPING_RAW_HARDWARE;
    default:
        return 0;
    }
}

static void drop_errqueue(struct skw_tsock *s)
{
    char data[64], control[SKW_CONTROL_LEN];
    for (int i = 0; i < 4096; i++) {
        struct iovec iov = {data, sizeof(data)};
        struct msghdr m = {0};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = control;
        m.msg_controllen = sizeof(control);
        if (recvmsg(s->fd, &m, MSG_ERRQUEUE | MSG_DONTWAIT) < 0)
            break;
    }
}

int skw_tsock_set_mode(struct skw_tsock *s, int mode)
{
    uint32_t zero = 0, flags;
    if (mode < SKW_TS_NONE || mode > SKW_TS_HARDWARE)
        return -EINVAL;
    flags = skw_tsock_mode_flags(mode);
    /* Clear first: the kernel restarts the OPT_ID count only when OPT_ID
     * goes from off to on. */
    if (setsockopt(s->fd, SOL_SOCKET, SO_TIMESTAMPING_OLD, &zero, sizeof(zero)) != 0)
        return -errno;
    drop_errqueue(s);
    if (flags && setsockopt(s->fd, SOL_SOCKET, SO_TIMESTAMPING_OLD, &flags,
                            sizeof(flags)) != 0) {
        s->mode = SKW_TS_NONE;
        return -errno;
    }
    s->mode = mode;
    s->next_id = 0;
    s->nstash = 0;
    return 0;
}

long skw_tsock_send(struct skw_tsock *s, const void *buf, size_t len,
                    const struct sockaddr_storage *to, socklen_t tolen,
                    uint32_t *id_out, int64_t *user_ns)
{
    ssize_t n;
    *user_ns = now_ns(CLOCK_REALTIME);
    n = sendto(s->fd, buf, len, MSG_DONTWAIT, (const struct sockaddr *)to, tolen);
    if (n < 0)
        return -errno;
    *id_out = s->next_id;
    if (s->mode != SKW_TS_NONE)
        s->next_id++;
    s->st.sent++;
    return (long)n;
}

long skw_tsock_send_unstamped(struct skw_tsock *s, const void *buf, size_t len,
                              const struct sockaddr_storage *to, socklen_t tolen)
{
    /* a per-packet SO_TIMESTAMPING control message replaces the socket's TX
     * recording flags for this packet only (Linux >= 4.0): with none set the
     * kernel neither stamps it nor advances its OPT_ID count */
    union {
        char buf[CMSG_SPACE(sizeof(uint32_t))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = { (void *)buf, len };
    struct msghdr m;
    ssize_t n;
    memset(&m, 0, sizeof(m));
    m.msg_name = (void *)to;
    m.msg_namelen = tolen;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (s->mode != SKW_TS_NONE) {
        uint32_t none = 0;
        struct cmsghdr *c;
        memset(&ctl, 0, sizeof(ctl));
        m.msg_control = ctl.buf;
        m.msg_controllen = sizeof(ctl.buf);
        c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SO_TIMESTAMPING_OLD;
        c->cmsg_len = CMSG_LEN(sizeof(none));
        memcpy(CMSG_DATA(c), &none, sizeof(none));
    }
    n = sendmsg(s->fd, &m, MSG_DONTWAIT);
    if (n < 0)
        return -errno;
    s->st.sent_unstamped++;
    return (long)n;
}

int skw_tsock_parse_cmsgs(const void *control, size_t controllen,
                          struct skw_stamp *stamp, uint32_t *id, int *tstype)
{
    const unsigned char *p = control, *end = p + controllen;
    int found_err = 0;
    stamp->ns = 0;
    stamp->src = SKW_SRC_MISSING;
    stamp->id = 0;
    *id = 0;
    *tstype = -1;
    while ((size_t)(end - p) >= sizeof(struct cmsghdr)) {
        struct cmsghdr c;
        memcpy(&c, p, sizeof(c));
        if (c.cmsg_len < CMSG_LEN(0) || c.cmsg_len > (size_t)(end - p))
            return -EINVAL;
        const unsigned char *data = p + CMSG_LEN(0);
        size_t dlen = c.cmsg_len - CMSG_LEN(0);
        if (c.cmsg_level == SOL_SOCKET &&
            (c.cmsg_type == SO_TIMESTAMPING_OLD || c.cmsg_type == SO_TIMESTAMPING_NEW)) {
            /* three timespecs: [0] software, [1] legacy, [2] raw hardware;
             * both variants are 64-bit seconds + nanoseconds on LP64 */
            struct { int64_t sec, nsec; } t[3];
            if (dlen < sizeof(t))
                return -EINVAL;
            memcpy(t, data, sizeof(t));
            if (t[2].sec || t[2].nsec) {
                stamp->ns = t[2].sec * 1000000000LL + t[2].nsec;
                stamp->src = SKW_SRC_HARDWARE;
            } else if (t[0].sec || t[0].nsec) {
                stamp->ns = t[0].sec * 1000000000LL + t[0].nsec;
                stamp->src = SKW_SRC_KERNEL;
            }
        } else if ((c.cmsg_level == SOL_IP && c.cmsg_type == IP_RECVERR) ||
                   (c.cmsg_level == SOL_IPV6 && c.cmsg_type == IPV6_RECVERR)) {
            struct sock_extended_err ee;
            if (dlen < sizeof(ee))
                return -EINVAL;
            memcpy(&ee, data, sizeof(ee));
            if (ee.ee_errno == ENOMSG && ee.ee_origin == SO_EE_ORIGIN_TIMESTAMPING) {
                *id = ee.ee_data;
                *tstype = (int)ee.ee_info;
                found_err = 1;
            }
        }
        size_t step = CMSG_ALIGN(c.cmsg_len);
        if (step == 0 || step > (size_t)(end - p))
            break;
        p += step;
    }
    stamp->id = *id;
    return found_err;
}

int skw_tsock_set_discard(struct skw_tsock *s, const void *pattern, size_t len)
{
    if (len > SKW_TSOCK_DISCARD_MAX)
        return -EINVAL;
    if (len)
        memcpy(s->discard, pattern, len);
    s->discard_len = len;
    return 0;
}

long skw_tsock_recv(struct skw_tsock *s, void *buf, size_t cap,
                    struct sockaddr_storage *from, socklen_t *fromlen,
                    struct skw_stamp *rx, int64_t timeout_ns, int wake_fd)
{
    char control[SKW_CONTROL_LEN];
    int64_t deadline = timeout_ns > 0 ? now_ns(CLOCK_MONOTONIC) + timeout_ns : 0;
    int hooked = 0;
    for (int spins = 0; spins < 1000000; spins++) {
        struct iovec iov = {buf, cap};
        struct msghdr m = {0};
        uint32_t id;
        int tstype;
        m.msg_name = from;
        m.msg_namelen = sizeof(*from);
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = control;
        m.msg_controllen = sizeof(control);
        ssize_t n = recvmsg(s->fd, &m, MSG_DONTWAIT);
        if (n >= 0) {
            if (s->discard_len && (size_t)n == s->discard_len && n <= (ssize_t)cap &&
                memcmp(buf, s->discard, s->discard_len) == 0) {
                s->st.discarded++;
                continue;
            }
            int64_t user = now_ns(CLOCK_REALTIME);
            *fromlen = m.msg_namelen;
            if (skw_tsock_parse_cmsgs(control, m.msg_controllen, rx, &id, &tstype) < 0 ||
                rx->src == SKW_SRC_MISSING) {
                if (s->mode != SKW_TS_NONE)
                    s->st.rx_unstamped++;
                rx->ns = user;
                rx->src = SKW_SRC_USER;
            }
            rx->id = 0;
            if (m.msg_flags & MSG_TRUNC)
                s->st.truncated++;
            s->st.received++;
            if (s->hook && !(m.msg_flags & MSG_TRUNC) &&
                s->hook(s->hook_ctx, s, buf, (size_t)n, from, *fromlen, rx)) {
                /* a flood must not keep the caller from its timers and signals */
                if (++hooked >= SKW_TSOCK_HOOK_BURST ||
                    (timeout_ns > 0 && now_ns(CLOCK_MONOTONIC) >= deadline))
                    return -EAGAIN;
                continue;
            }
            return (long)n;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        if (timeout_ns == 0)
            return -EAGAIN;
        int64_t left = timeout_ns < 0 ? -1 : deadline - now_ns(CLOCK_MONOTONIC);
        if (timeout_ns > 0 && left <= 0)
            return -EAGAIN;
        struct pollfd fds[2] = {{s->fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
        int pr = poll(fds, wake_fd >= 0 ? 2 : 1, left < 0 ? -1 : poll_ms(left));
        if (pr < 0)
            return -errno;
        if (pr > 0 && wake_fd >= 0 && fds[1].revents)
            return SKW_TSOCK_WOKEN;
        if (pr > 0 && !(fds[0].revents & POLLIN) && (fds[0].revents & POLLERR)) {
            /* Only TX stamps are waiting: they are not what we wait for
             * here and would wake every poll, so keep them aside. */
            if (skw_tsock_tx_collect(s) == 0) {
                int err = 0; /* a pending socket error, not a stamp: clear it */
                socklen_t el = sizeof(err);
                getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            }
        }
    }
    return -EAGAIN;
}

/* Read one error-queue message; 1 with a stamp report, 0 with something
 * else, -EAGAIN when empty. */
static int read_errqueue(struct skw_tsock *s, struct skw_stamp *out, int *tstype)
{
    char data[64], control[SKW_CONTROL_LEN];
    struct iovec iov = {data, sizeof(data)};
    struct msghdr m = {0};
    uint32_t id;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof(control);
    if (recvmsg(s->fd, &m, MSG_ERRQUEUE | MSG_DONTWAIT) < 0)
        return -errno;
    int rc = skw_tsock_parse_cmsgs(control, m.msg_controllen, out, &id, tstype);
    if (rc <= 0 || out->src == SKW_SRC_MISSING)
        return 0;
    out->id = id;
    return 1;
}

static void stash_put(struct skw_tsock *s, const struct skw_stamp *st)
{
    if (s->nstash == SKW_TSOCK_STASH) { /* oldest out */
        memmove(s->stash, s->stash + 1, sizeof(s->stash[0]) * (SKW_TSOCK_STASH - 1));
        s->nstash--;
        s->st.tx_stale++;
    }
    s->stash[s->nstash++] = *st;
}

static int stash_take(struct skw_tsock *s, uint32_t id, struct skw_stamp *out)
{
    int found = 0;
    for (int i = 0; i < s->nstash;) {
        int32_t age = (int32_t)(s->stash[i].id - id);
        if (age == 0 && !found) {
            *out = s->stash[i];
            found = 1;
        } else if (age >= 0) {
            i++;
            continue;
        } else {
            s->st.tx_stale++; /* older than what is asked: nobody wants it */
        }
        memmove(s->stash + i, s->stash + i + 1,
                sizeof(s->stash[0]) * (size_t)(s->nstash - i - 1));
        s->nstash--;
    }
    return found;
}

int skw_tsock_tx_collect(struct skw_tsock *s)
{
    int got = 0;
    for (int i = 0; i < 4096; i++) {
        struct skw_stamp st;
        int tstype;
        int rc = read_errqueue(s, &st, &tstype);
        if (rc < 0)
            break;
        if (rc == 0 || (tstype != SCM_TSTAMP_SND && tstype != -1))
            continue;
        stash_put(s, &st);
        got++;
    }
    return got;
}

int skw_tsock_tx_stamp(struct skw_tsock *s, uint32_t id, int64_t timeout_ns,
                       struct skw_stamp *out)
{
    if (s->mode == SKW_TS_NONE)
        return -ENOMSG;
    if (stash_take(s, id, out)) {
        s->st.tx_stamped++;
        return 0;
    }
    int64_t deadline = now_ns(CLOCK_MONOTONIC) + (timeout_ns > 0 ? timeout_ns : 0);
    for (int spins = 0; spins < 1000000; spins++) {
        struct skw_stamp st;
        int tstype;
        int rc = read_errqueue(s, &st, &tstype);
        if (rc == 1 && (tstype == SCM_TSTAMP_SND || tstype == -1)) {
            if (st.id == id) {
                *out = st;
                s->st.tx_stamped++;
                return 0;
            }
            if ((int32_t)(st.id - id) < 0)
                s->st.tx_stale++; /* an older send we stopped waiting for */
            else
                stash_put(s, &st); /* a later send's stamp came first */
            continue;
        }
        if (rc >= 0)
            continue; /* another report type (SCHED/ACK) or a non-stamp error */
        if (rc != -EAGAIN && rc != -EWOULDBLOCK && rc != -EINTR)
            return rc;
        int64_t left = deadline - now_ns(CLOCK_MONOTONIC);
        if (left <= 0)
            break;
        struct pollfd pfd = {s->fd, 0, 0}; /* POLLERR is always reported */
        if (poll(&pfd, 1, poll_ms(left)) < 0 && errno != EINTR)
            return -errno;
    }
    s->st.tx_missing++;
    return -ETIMEDOUT;
}

/* --- interfaces ----------------------------------------------------------- */

static int ifreq_ioctl(const char *ifname, unsigned long req, void *data)
{
    struct ifreq ifr;
    int fd, rc = 0;
    if (!ifname || strlen(ifname) >= IFNAMSIZ || !ifname[0])
        return -EINVAL;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
    ifr.ifr_data = data;
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (ioctl(fd, req, &ifr) != 0)
        rc = -errno;
    close(fd);
    return rc;
}

int skw_tsock_ts_info(const char *ifname, struct skw_ts_info *out)
{
    struct ethtool_ts_info info;
    memset(&info, 0, sizeof(info));
    info.cmd = ETHTOOL_GET_TS_INFO;
    int rc = ifreq_ioctl(ifname, SIOCETHTOOL, &info);
    if (rc)
        return rc;
    out->so_timestamping = info.so_timestamping;
    out->phc_index = info.phc_index;
    out->tx_types = info.tx_types;
    out->rx_filters = info.rx_filters;
    return 0;
}

int skw_tsock_hwtstamp_set(const char *ifname, int *tx_type, int *rx_filter)
{
    struct hwtstamp_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.tx_type = *tx_type;
    cfg.rx_filter = *rx_filter;
    int rc = ifreq_ioctl(ifname, SIOCSHWTSTAMP, &cfg);
    if (rc)
        return rc;
    *tx_type = cfg.tx_type;
    *rx_filter = cfg.rx_filter;
    return 0;
}

int skw_tsock_hwtstamp_get(const char *ifname, int *tx_type, int *rx_filter)
{
    struct hwtstamp_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    int rc = ifreq_ioctl(ifname, SIOCGHWTSTAMP, &cfg);
    if (rc)
        return rc;
    *tx_type = cfg.tx_type;
    *rx_filter = cfg.rx_filter;
    return 0;
}
