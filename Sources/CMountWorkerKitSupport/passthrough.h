#ifndef MOUNTSUP_CMOUNTWORKERKITSUPPORT_PASSTHROUGH_H
#define MOUNTSUP_CMOUNTWORKERKITSUPPORT_PASSTHROUGH_H
// Between connection.c and passthrough.c: the parts of FUSE passthrough that happen in the
// session's writev.
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/// Whether a raw FUSE_INIT request offers FUSE_PASSTHROUGH.
int mwk_init_request_offers_passthrough(const void *request, size_t length);

/// Adds FUSE_PASSTHROUGH and `max_stack_depth` to libfuse's INIT reply.
void mwk_patch_init_reply(struct iovec *iov, int count, uint32_t max_stack_depth);

/// Adds FOPEN_PASSTHROUGH and the backing id to the open or create reply this thread is
/// sending, if it asked for one (mwk_reply_open_passthrough, mwk_reply_create_passthrough).
void mwk_patch_open_reply(struct iovec *iov, int count);

#endif
