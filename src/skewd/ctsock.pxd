# Declarations of csrc/tsock.h and the kernel constants it decodes.
from libc.stdint cimport int64_t, uint64_t, uint32_t, int32_t

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr_storage:
        unsigned short ss_family
    enum:
        AF_INET
        AF_INET6

cdef extern from "<netinet/in.h>" nogil:
    enum:
        INET6_ADDRSTRLEN

cdef extern from "<linux/net_tstamp.h>" nogil:
    enum:
        SOF_TIMESTAMPING_TX_HARDWARE
        SOF_TIMESTAMPING_TX_SOFTWARE
        SOF_TIMESTAMPING_RX_HARDWARE
        SOF_TIMESTAMPING_RX_SOFTWARE
        SOF_TIMESTAMPING_SOFTWARE
        SOF_TIMESTAMPING_SYS_HARDWARE
        SOF_TIMESTAMPING_RAW_HARDWARE
        SOF_TIMESTAMPING_OPT_ID
        SOF_TIMESTAMPING_TX_SCHED
        SOF_TIMESTAMPING_TX_ACK
        SOF_TIMESTAMPING_OPT_CMSG
        SOF_TIMESTAMPING_OPT_TSONLY
        SOF_TIMESTAMPING_OPT_STATS
        SOF_TIMESTAMPING_OPT_PKTINFO
        SOF_TIMESTAMPING_OPT_TX_SWHW
        HWTSTAMP_TX_OFF
        HWTSTAMP_TX_ON
        HWTSTAMP_TX_ONESTEP_SYNC
        HWTSTAMP_TX_ONESTEP_P2P
        HWTSTAMP_FILTER_NONE
        HWTSTAMP_FILTER_ALL
        HWTSTAMP_FILTER_SOME
        HWTSTAMP_FILTER_PTP_V1_L4_EVENT
        HWTSTAMP_FILTER_PTP_V1_L4_SYNC
        HWTSTAMP_FILTER_PTP_V1_L4_DELAY_REQ
        HWTSTAMP_FILTER_PTP_V2_L4_EVENT
        HWTSTAMP_FILTER_PTP_V2_L4_SYNC
        HWTSTAMP_FILTER_PTP_V2_L4_DELAY_REQ
        HWTSTAMP_FILTER_PTP_V2_L2_EVENT
        HWTSTAMP_FILTER_PTP_V2_L2_SYNC
        HWTSTAMP_FILTER_PTP_V2_L2_DELAY_REQ
        HWTSTAMP_FILTER_PTP_V2_EVENT
        HWTSTAMP_FILTER_PTP_V2_SYNC
        HWTSTAMP_FILTER_PTP_V2_DELAY_REQ
        HWTSTAMP_FILTER_NTP_ALL

cdef extern from "<linux/errqueue.h>" nogil:
    enum:
        SCM_TSTAMP_SND
        SCM_TSTAMP_SCHED
        SCM_TSTAMP_ACK

cdef extern from "tsock.h" nogil:
    enum:
        SKW_TS_NONE
        SKW_TS_SOFTWARE
        SKW_TS_HARDWARE
        SKW_SRC_MISSING
        SKW_SRC_USER
        SKW_SRC_KERNEL
        SKW_SRC_HARDWARE

    struct skw_stamp:
        int64_t ns
        int32_t src
        uint32_t id

    struct skw_tsock_stats:
        uint64_t sent
        uint64_t sent_unstamped
        uint64_t received
        uint64_t tx_stamped
        uint64_t tx_missing
        uint64_t tx_stale
        uint64_t rx_unstamped
        uint64_t truncated
        uint64_t discarded

    ctypedef int (*skw_tsock_hook)(void *ctx, skw_tsock *s, const unsigned char *buf,
                                   size_t n, const sockaddr_storage *frm, socklen_t fromlen,
                                   const skw_stamp *rx)

    struct skw_tsock:
        int fd
        int family
        int mode
        uint32_t next_id
        skw_tsock_stats st
        skw_tsock_hook hook
        void *hook_ctx

    struct skw_ts_info:
        uint32_t so_timestamping
        int32_t phc_index
        uint32_t tx_types
        uint32_t rx_filters

    int skw_tsock_open(skw_tsock *s, int family)
    int skw_tsock_close(skw_tsock *s)
    int skw_tsock_addr(int family, const char *ip, int port,
                       sockaddr_storage *out, socklen_t *len_out)
    int skw_tsock_addr_str(const sockaddr_storage *a, char *ip, size_t iplen, int *port)
    int skw_tsock_bind(skw_tsock *s, const char *ip, int port)
    int skw_tsock_bind_device(skw_tsock *s, const char *ifname)
    int skw_tsock_local_port(skw_tsock *s, int *port)
    int skw_tsock_set_mode(skw_tsock *s, int mode)
    uint32_t skw_tsock_mode_flags(int mode)
    int skw_tsock_set_discard(skw_tsock *s, const void *pattern, size_t len)
    long skw_tsock_send_unstamped(skw_tsock *s, const void *buf, size_t len,
                                  const sockaddr_storage *to, socklen_t tolen)
    long skw_tsock_send(skw_tsock *s, const void *buf, size_t len,
                        const sockaddr_storage *to, socklen_t tolen,
                        uint32_t *id_out, int64_t *user_ns)
    long skw_tsock_recv(skw_tsock *s, void *buf, size_t cap,
                        sockaddr_storage *frm, socklen_t *fromlen,
                        skw_stamp *rx, int64_t timeout_ns, int wake_fd)
    long SKW_TSOCK_WOKEN
    int skw_tsock_tx_stamp(skw_tsock *s, uint32_t id, int64_t timeout_ns, skw_stamp *out)
    int skw_tsock_tx_collect(skw_tsock *s)
    int skw_tsock_parse_cmsgs(const void *control, size_t controllen,
                              skw_stamp *stamp, uint32_t *id, int *tstype)
    int skw_tsock_ts_info(const char *ifname, skw_ts_info *out)
    int skw_tsock_hwtstamp_set(const char *ifname, int *tx_type, int *rx_filter)
    int skw_tsock_hwtstamp_get(const char *ifname, int *tx_type, int *rx_filter)


cdef extern from "statepage.h" nogil:
    struct skw_page:
        pass


cdef extern from "responder.h" nogil:
    struct skw_resp_stats:
        uint64_t received, answered, malformed, bad_version, wrong_type, unauthenticated
        uint64_t replayed, stale, rate_limited, oversize, send_errors, tx_stamp_missing

    struct skw_responder:
        int require_auth
        int64_t max_age_ns
        double rate_per_s, burst
        int64_t tx_wait_ns
        const skw_page *page
        int nkeys
        skw_resp_stats st

    int skw_resp_init(skw_responder *r, int max_sources, int max_sessions)
    void skw_resp_free(skw_responder *r)
    int skw_resp_add_key(skw_responder *r, uint32_t id, const void *secret, size_t len)
    int skw_resp_hook(void *responder, skw_tsock *s, const unsigned char *buf, size_t n,
                      const sockaddr_storage *frm, socklen_t fromlen, const skw_stamp *rx)


cdef extern from "sha256.h" nogil:
    void skw_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
                         unsigned char *out)
