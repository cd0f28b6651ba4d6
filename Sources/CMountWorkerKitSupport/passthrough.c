#define _GNU_SOURCE
#define FUSE_USE_VERSION 314
#include "CMountWorkerKitSupport.h"
#include "passthrough.h"

#include <errno.h>
#include <fuse3/fuse_lowlevel.h>
#include <linux/capability.h>
#include <linux/fuse.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

// FUSE passthrough (protocol 7.40, Linux 6.9): the kernel does reads, writes and mmap of an
// open file on a backing file the server registered, without asking the server. libfuse 3.14
// and Debian 12's <linux/fuse.h> predate it, so the ABI is spelled out here, from the kernel's
// include/uapi/linux/fuse.h.

#define MWK_FUSE_INIT_EXT (1u << 30)
#define MWK_FUSE_PASSTHROUGH_FLAGS2 (1u << (37 - 32))
#define MWK_FOPEN_KEEP_CACHE (1u << 1)
#define MWK_FOPEN_PASSTHROUGH (1u << 7)

struct mwk_backing_map {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
#define MWK_FUSE_DEV_IOC_BACKING_OPEN _IOW(229, 1, struct mwk_backing_map)
#define MWK_FUSE_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

/// struct fuse_init_out of protocol 7.40 up to max_stack_depth; libfuse 3.14 sends 64 bytes
/// with zeros from flags2 on.
struct mwk_init_out {
  uint32_t major, minor, max_readahead, flags;
  uint16_t max_background, congestion_threshold;
  uint32_t max_write, time_gran;
  uint16_t max_pages, map_alignment;
  uint32_t flags2, max_stack_depth;
};

/// struct fuse_open_out of 7.40: libfuse 3.14 leaves the last field (its "padding") zero.
struct mwk_open_out {
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;
};

_Static_assert(sizeof(struct mwk_open_out) == sizeof(struct fuse_open_out), "fuse_open_out");

static _Thread_local int32_t pending_backing_id;

int mwk_init_request_offers_passthrough(const void *request, size_t length) {
  if (length < sizeof(struct fuse_in_header) + 20) return 0;
  const unsigned char *bytes = request;
  uint32_t flags, flags2;
  memcpy(&flags, bytes + sizeof(struct fuse_in_header) + 12, sizeof flags);
  memcpy(&flags2, bytes + sizeof(struct fuse_in_header) + 16, sizeof flags2);
  return (flags & MWK_FUSE_INIT_EXT) != 0 && (flags2 & MWK_FUSE_PASSTHROUGH_FLAGS2) != 0;
}

void mwk_patch_init_reply(struct iovec *iov, int count, uint32_t max_stack_depth) {
  if (count < 2 || iov[count - 1].iov_len < sizeof(struct mwk_init_out)) return;
  struct mwk_init_out *out = iov[count - 1].iov_base;
  out->flags |= MWK_FUSE_INIT_EXT;
  out->flags2 |= MWK_FUSE_PASSTHROUGH_FLAGS2;
  out->max_stack_depth = max_stack_depth;
}

void mwk_patch_open_reply(struct iovec *iov, int count) {
  if (pending_backing_id <= 0 || count < 2) return;
  const struct fuse_out_header *header = iov[0].iov_base;
  struct iovec *last = &iov[count - 1];
  if (header->error != 0 || last->iov_len < sizeof(struct mwk_open_out)) return;
  // The open reply ends the argument: alone for OPEN, after fuse_entry_out for CREATE.
  struct mwk_open_out *out =
      (struct mwk_open_out *)((char *)last->iov_base + last->iov_len - sizeof *out);
  // The kernel refuses FOPEN_KEEP_CACHE with passthrough: its page cache is not used.
  out->open_flags = (out->open_flags & ~MWK_FOPEN_KEEP_CACHE) | MWK_FOPEN_PASSTHROUGH;
  out->backing_id = pending_backing_id;
}

int mwk_reply_open_passthrough(struct fuse_req *req, const struct fuse_file_info *info,
                               int32_t backing_id) {
  pending_backing_id = backing_id;
  int result = fuse_reply_open(req, info);
  pending_backing_id = 0;
  return result;
}

int mwk_reply_create_passthrough(struct fuse_req *req, const struct fuse_entry_param *entry,
                                 const struct fuse_file_info *info, int32_t backing_id) {
  pending_backing_id = backing_id;
  int result = fuse_reply_create(req, entry, info);
  pending_backing_id = 0;
  return result;
}

int32_t mwk_backing_open(int device, int fd) {
  struct mwk_backing_map map = {.fd = fd};
  int id = ioctl(device, MWK_FUSE_DEV_IOC_BACKING_OPEN, &map);
  if (id > 0) return id;
  return id == 0 ? -EIO : -errno;
}

int mwk_backing_close(int device, int32_t backing_id) {
  uint32_t id = (uint32_t)backing_id;
  return ioctl(device, MWK_FUSE_DEV_IOC_BACKING_CLOSE, &id) == 0 ? 0 : errno;
}

int mwk_may_register_backing_files(void) {
  struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
  memset(data, 0, sizeof data);
  if (syscall(SYS_capget, &header, data) != 0) return 0;
  if ((data[CAP_TO_INDEX(CAP_SYS_ADMIN)].effective & CAP_TO_MASK(CAP_SYS_ADMIN)) == 0) return 0;
  // The kernel asks for the capability in the initial user namespace, whose uid map is the
  // identity over the whole range; any other namespace maps less.
  FILE *map = fopen("/proc/self/uid_map", "re");
  if (map == NULL) return 0;
  unsigned long inside = 1, outside = 1, count = 0;
  int matched = fscanf(map, "%lu %lu %lu", &inside, &outside, &count);
  fclose(map);
  return matched == 3 && inside == 0 && outside == 0 && count == 4294967295UL;
}
