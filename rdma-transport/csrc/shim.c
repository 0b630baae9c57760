/*
 * keel-rdma C shim: exported wrappers for the rdma-core verbs that are `static inline` (or
 * macros) in <infiniband/verbs.h>, so Rust can call them through plain `extern "C"` symbols.
 * Each wrapper only forwards its arguments; no state lives here.
 */
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

int keel_ibv_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad_wr)
{
	return ibv_post_send(qp, wr, bad_wr);
}

int keel_ibv_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad_wr)
{
	return ibv_post_recv(qp, wr, bad_wr);
}

int keel_ibv_post_srq_recv(struct ibv_srq *srq, struct ibv_recv_wr *wr,
			   struct ibv_recv_wr **bad_wr)
{
	return ibv_post_srq_recv(srq, wr, bad_wr);
}

int keel_ibv_poll_cq(struct ibv_cq *cq, int num_entries, struct ibv_wc *wc)
{
	return ibv_poll_cq(cq, num_entries, wc);
}

int keel_ibv_req_notify_cq(struct ibv_cq *cq, int solicited_only)
{
	return ibv_req_notify_cq(cq, solicited_only);
}

/* ibv_reg_mr is a macro choosing between two symbols by the access flags; go through it. */
struct ibv_mr *keel_ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length, unsigned int access)
{
	return ibv_reg_mr(pd, addr, length, access);
}

/* struct ibv_qp is kept opaque on the Rust side; these read the two fields Keel needs. */
uint32_t keel_ibv_qp_num(const struct ibv_qp *qp)
{
	return qp->qp_num;
}

struct ibv_context *keel_ibv_qp_context(const struct ibv_qp *qp)
{
	return qp->context;
}
