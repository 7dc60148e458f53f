/*
 * tsock.h - UDP sockets (IPv4 and IPv6) that timestamp every datagram.
 *
 * SO_TIMESTAMPING in one of three modes:
 *   SKW_TS_NONE      no kernel stamps; every stamp is a user-space
 *                    CLOCK_REALTIME read next to the syscall (SKW_SRC_USER);
 *   SKW_TS_SOFTWARE  kernel stamps: RX when the packet enters the stack, TX
 *                    when the driver hands it to the device (SKW_SRC_KERNEL);
 *   SKW_TS_HARDWARE  NIC stamps as well (SKW_SRC_HARDWARE, in the NIC's PHC
 *                    timescale); the kernel stamp is kept as a fallback for
 *                    any packet the NIC did not stamp.
 *
 * TX stamps come back on the socket's error queue. Each sent datagram gets an
 * id (SOF_TIMESTAMPING_OPT_ID: the kernel counts datagrams from 0 since the
 * mode was set) and the stamp returns with that id in ee_data and no payload
 * (SOF_TIMESTAMPING_OPT_TSONLY). skw_tsock_tx_stamp waits a bounded time for
 * one id; a stamp that never comes is counted and replaced by the user-space
 * read taken just before the send, marked SKW_SRC_USER.
 *
 * Every function returns 0 (or a length) or a negative errno; nothing prints.
 */
#ifndef SKW_TSOCK_H
#define SKW_TSOCK_H

#include <stddef.h>
#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

enum skw_ts_mode {
    SKW_TS_NONE = 0,
    SKW_TS_SOFTWARE = 1,
    SKW_TS_HARDWARE = 2,
};

/* Where a stamp came from, best last. */
enum skw_stamp_src {
    SKW_SRC_MISSING = 0,  /* no stamp at all */
    SKW_SRC_USER = 1,     /* user-space clock read beside the syscall */
    SKW_SRC_KERNEL = 2,   /* kernel software stamp, CLOCK_REALTIME */
    SKW_SRC_HARDWARE = 3, /* NIC stamp, PHC timescale */
};

struct skw_stamp {
    int64_t ns;
    int32_t src;   /* enum skw_stamp_src */
    uint32_t id;   /* TX: the OPT_ID the stamp belongs to; RX: 0 */
};

struct skw_tsock_stats {
    uint64_t sent;
    uint64_t sent_unstamped; /* datagrams sent asking for no TX stamp */
    uint64_t received;
    uint64_t tx_stamped;   /* TX stamps delivered for the id asked for */
    uint64_t tx_missing;   /* asked-for TX stamps that never came in time */
    uint64_t tx_stale;     /* stamps for ids no longer waited for, discarded */
    uint64_t rx_unstamped; /* datagrams that came without a kernel stamp */
    uint64_t truncated;    /* datagrams longer than the caller's buffer */
    uint64_t discarded;    /* datagrams equal to the discard pattern, dropped */
};

#define SKW_TSOCK_STASH 32
#define SKW_TSOCK_DISCARD_MAX 16

/* recv returns -EAGAIN after this many datagrams taken by its hook */
#define SKW_TSOCK_HOOK_BURST 256

struct skw_tsock;
/* Called by recv for every datagram it takes (discarded ones aside): 1 when
 * the hook dealt with it (recv then goes on waiting), 0 to return it. */
typedef int (*skw_tsock_hook)(void *ctx, struct skw_tsock *s, const unsigned char *buf,
                              size_t n, const struct sockaddr_storage *from, socklen_t fromlen,
                              const struct skw_stamp *rx);

struct skw_tsock {
    int fd;
    int family;          /* AF_INET or AF_INET6 */
    int mode;            /* enum skw_ts_mode now in force */
    uint32_t next_id;    /* OPT_ID of the next datagram sent */
    /* a datagram exactly equal to this is counted and dropped by recv */
    size_t discard_len;  /* 0: none */
    unsigned char discard[SKW_TSOCK_DISCARD_MAX];
    struct skw_tsock_stats st;
    /* TX stamps read off the error queue before anyone asked for them */
    int nstash;
    struct skw_stamp stash[SKW_TSOCK_STASH];
    skw_tsock_hook hook;  /* NULL: none */
    void *hook_ctx;
};

/* Open a non-blocking UDP socket of `family` (AF_INET/AF_INET6). */
int skw_tsock_open(struct skw_tsock *s, int family);
int skw_tsock_close(struct skw_tsock *s);

/* Turn a textual address and port into a sockaddr of s's family (IPv4
 * literals on an IPv6 socket become v4-mapped). -EINVAL if not a literal. */
int skw_tsock_addr(int family, const char *ip, int port,
                   struct sockaddr_storage *out, socklen_t *len_out);
/* The reverse: text into ip (>= INET6_ADDRSTRLEN bytes) and *port. */
int skw_tsock_addr_str(const struct sockaddr_storage *a, char *ip, size_t iplen,
                       int *port);

int skw_tsock_bind(struct skw_tsock *s, const char *ip, int port);
/* Bind to an interface (SO_BINDTODEVICE); needs CAP_NET_RAW. */
int skw_tsock_bind_device(struct skw_tsock *s, const char *ifname);
/* The bound local port. */
int skw_tsock_local_port(struct skw_tsock *s, int *port);

/* Set the timestamping mode. Restarts the OPT_ID count at 0 and drops any
 * stamps still queued. */
int skw_tsock_set_mode(struct skw_tsock *s, int mode);

/* The SO_TIMESTAMPING flags a mode asks for. */
uint32_t skw_tsock_mode_flags(int mode);

/* Send one datagram. *id_out gets its OPT_ID and *user_ns a CLOCK_REALTIME
 * read taken just before the send (the fallback TX stamp). Returns the
 * number of bytes sent or -errno. */
long skw_tsock_send(struct skw_tsock *s, const void *buf, size_t len,
                    const struct sockaddr_storage *to, socklen_t tolen,
                    uint32_t *id_out, int64_t *user_ns);

/* Send one datagram that asks for no TX stamp and takes no OPT_ID (a
 * warm-up packet, say). Returns the number of bytes sent or -errno. */
long skw_tsock_send_unstamped(struct skw_tsock *s, const void *buf, size_t len,
                              const struct sockaddr_storage *to, socklen_t tolen);

/* Datagrams exactly equal to pattern (at most SKW_TSOCK_DISCARD_MAX bytes;
 * len 0 turns it off) are counted in st.discarded and never returned by
 * recv. -EINVAL when the pattern is too long. */
int skw_tsock_set_discard(struct skw_tsock *s, const void *pattern, size_t len);

/* Receive one datagram, waiting up to timeout_ns (0: do not wait, <0:
 * forever). -EAGAIN when nothing came. The RX stamp is the best one the
 * control messages carry, else a user-space read right after the receive.
 * wake_fd >= 0 is watched too while waiting: SKW_TSOCK_WOKEN when it turns
 * readable first. A signal ends the wait with -EINTR, so the caller's
 * handlers run. Discarded datagrams never end a wait: a daemon blocked here
 * sleeps through its peers' warm-up packets. */
#define SKW_TSOCK_WOKEN (-EINPROGRESS)
long skw_tsock_recv(struct skw_tsock *s, void *buf, size_t cap,
                    struct sockaddr_storage *from, socklen_t *fromlen,
                    struct skw_stamp *rx, int64_t timeout_ns, int wake_fd);

/* Wait up to timeout_ns for the TX stamp of datagram `id`. Stamps of older
 * ids met on the way are discarded (counted stale). On -ETIMEDOUT the
 * stamp is counted missing and *out is left untouched. */
int skw_tsock_tx_stamp(struct skw_tsock *s, uint32_t id, int64_t timeout_ns,
                       struct skw_stamp *out);

/* Move every TX stamp queued now into the socket's stash (where
 * skw_tsock_tx_stamp finds them), without waiting. Returns how many. */
int skw_tsock_tx_collect(struct skw_tsock *s);

/* Parse the control messages of one recvmsg (a test hook as much as a
 * helper): the best timestamp into *stamp (src MISSING when there is none)
 * and, for error-queue messages, the OPT_ID into *id and the tstamp type
 * (SCM_TSTAMP_SND, _SCHED, _ACK) into *tstype (-1 when absent). Returns 1 if
 * an error-queue timestamp report was found, 0 otherwise, -EINVAL when a
 * control message is malformed. */
int skw_tsock_parse_cmsgs(const void *control, size_t controllen,
                          struct skw_stamp *stamp, uint32_t *id, int *tstype);

/* --- interfaces ----------------------------------------------------------- */

struct skw_ts_info {
    uint32_t so_timestamping; /* SOF_TIMESTAMPING_* the interface supports */
    int32_t phc_index;        /* /dev/ptpN, or -1 */
    uint32_t tx_types;        /* bit per HWTSTAMP_TX_* */
    uint32_t rx_filters;      /* bit per HWTSTAMP_FILTER_* */
};

/* ETHTOOL_GET_TS_INFO. -ENODEV: no such interface; -EOPNOTSUPP: the driver
 * cannot say. */
int skw_tsock_ts_info(const char *ifname, struct skw_ts_info *out);

/* SIOCSHWTSTAMP: ask the NIC for tx_type / rx_filter. On success the
 * config the driver really applied is written back (it may widen the
 * filter). -EOPNOTSUPP/-EINVAL: the driver cannot; -EPERM: needs
 * CAP_NET_ADMIN; -ERANGE: it cannot do that filter. */
int skw_tsock_hwtstamp_set(const char *ifname, int *tx_type, int *rx_filter);
/* SIOCGHWTSTAMP: the config in force now. */
int skw_tsock_hwtstamp_get(const char *ifname, int *tx_type, int *rx_filter);

#endif
