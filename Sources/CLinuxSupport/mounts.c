#define _GNU_SOURCE
#include "CLinuxMounts.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/syscall.h>
#include <unistd.h>

// From the kernel's uapi headers of 6.18 (linux/fanotify.h, linux/mount.h).

#ifndef FAN_REPORT_MNT
#define FAN_REPORT_MNT 0x00004000
#endif
#ifndef FAN_MARK_MNTNS
#define FAN_MARK_MNTNS 0x00000110
#endif
#ifndef FAN_MNT_ATTACH
#define FAN_MNT_ATTACH 0x01000000
#endif
#ifndef FAN_MNT_DETACH
#define FAN_MNT_DETACH 0x02000000
#endif
#ifndef FAN_EVENT_INFO_TYPE_MNT
#define FAN_EVENT_INFO_TYPE_MNT 7
#endif

#define MOUNTSUP_NR_STATMOUNT 457
#define MOUNTSUP_NR_LISTMOUNT 458
#define MOUNTSUP_LSMT_ROOT 0xffffffffffffffffULL

#define MOUNTSUP_STATMOUNT_SB_BASIC 0x00000001ULL
#define MOUNTSUP_STATMOUNT_MNT_BASIC 0x00000002ULL
#define MOUNTSUP_STATMOUNT_FS_TYPE 0x00000020ULL
#define MOUNTSUP_STATMOUNT_MNT_OPTS 0x00000080ULL
#define MOUNTSUP_STATMOUNT_FS_SUBTYPE 0x00000100ULL

struct mountsup_fanotify_info_header {
  uint8_t info_type;
  uint8_t pad;
  uint16_t len;
};

struct mountsup_fanotify_info_mnt {
  struct mountsup_fanotify_info_header hdr;
  uint64_t mnt_id;
};

struct mountsup_statmount {
  uint32_t size;
  uint32_t mnt_opts;
  uint64_t mask;
  uint32_t sb_dev_major;
  uint32_t sb_dev_minor;
  uint64_t sb_magic;
  uint32_t sb_flags;
  uint32_t fs_type;
  uint64_t mnt_id;
  uint64_t mnt_parent_id;
  uint32_t mnt_id_old;
  uint32_t mnt_parent_id_old;
  uint64_t mnt_attr;
  uint64_t mnt_propagation;
  uint64_t mnt_peer_group;
  uint64_t mnt_master;
  uint64_t propagate_from;
  uint32_t mnt_root;
  uint32_t mnt_point;
  uint64_t mnt_ns_id;
  uint32_t fs_subtype;
  uint32_t sb_source;
  uint32_t opt_num;
  uint32_t opt_array;
  uint32_t opt_sec_num;
  uint32_t opt_sec_array;
  uint64_t supported_mask;
  uint32_t mnt_uidmap_num;
  uint32_t mnt_uidmap;
  uint32_t mnt_gidmap_num;
  uint32_t mnt_gidmap;
  uint64_t spare2[43];
  char str[];
};

_Static_assert(sizeof(struct mountsup_statmount) == 512, "struct statmount is 512 bytes");

struct mountsup_mnt_id_req {
  uint32_t size;
  uint32_t spare;
  uint64_t mnt_id;
  uint64_t param;
};

int mountsup_mount_events_open(void) {
  int fd = fanotify_init(FAN_REPORT_MNT | FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY);
  if (fd < 0) return -1;
  if (fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_MNTNS, FAN_MNT_ATTACH | FAN_MNT_DETACH, AT_FDCWD,
                    "/proc/self/ns/mnt") != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

ssize_t mountsup_mount_events_read(int fd, mountsup_mount_event *events, size_t capacity) {
  // A mount event is 24 bytes of metadata and a 16-byte info record; the kernel hands out only
  // whole events, so a buffer sized for `capacity` of them never yields more.
  enum {
    EVENT_SIZE = sizeof(struct fanotify_event_metadata) + sizeof(struct mountsup_fanotify_info_mnt)
  };
  char buffer[256 * EVENT_SIZE] __attribute__((aligned(8)));
  size_t want = capacity < 256 ? capacity * EVENT_SIZE : sizeof buffer;
  ssize_t got;
  do {
    got = read(fd, buffer, want);
  } while (got < 0 && errno == EINTR);
  if (got <= 0) return got;
  size_t count = 0;
  const struct fanotify_event_metadata *event = (const void *)buffer;
  for (size_t left = (size_t)got; FAN_EVENT_OK(event, left) && count < capacity;
       event = FAN_EVENT_NEXT(event, left)) {
    mountsup_mount_event out = {.mask = event->mask, .mount_id = 0};
    const char *info = (const char *)event + event->metadata_len;
    const char *end = (const char *)event + event->event_len;
    while (info + sizeof(struct mountsup_fanotify_info_header) <= end) {
      const struct mountsup_fanotify_info_header *header = (const void *)info;
      if (header->len < sizeof *header || info + header->len > end) break;
      if (header->info_type == FAN_EVENT_INFO_TYPE_MNT &&
          header->len >= sizeof(struct mountsup_fanotify_info_mnt)) {
        memcpy(&out.mount_id, info + offsetof(struct mountsup_fanotify_info_mnt, mnt_id),
               sizeof out.mount_id);
      }
      info += header->len;
    }
    if (event->fd >= 0) close(event->fd);  // never for mount events; cheap insurance
    events[count++] = out;
  }
  return (ssize_t)count;
}

ssize_t mountsup_listmount(uint64_t after, uint64_t *ids, size_t capacity) {
  struct mountsup_mnt_id_req request = {
      .size = sizeof request, .mnt_id = MOUNTSUP_LSMT_ROOT, .param = after};
  return syscall(MOUNTSUP_NR_LISTMOUNT, &request, ids, capacity, 0);
}

int mountsup_statmount(uint64_t mount_id, void *buffer, size_t size, mountsup_mount_info *info) {
  struct mountsup_mnt_id_req request = {
      .size = sizeof request,
      .mnt_id = mount_id,
      .param = MOUNTSUP_STATMOUNT_SB_BASIC | MOUNTSUP_STATMOUNT_MNT_BASIC |
               MOUNTSUP_STATMOUNT_MNT_POINT | MOUNTSUP_STATMOUNT_FS_TYPE |
               MOUNTSUP_STATMOUNT_MNT_OPTS | MOUNTSUP_STATMOUNT_FS_SUBTYPE |
               MOUNTSUP_STATMOUNT_SB_SOURCE};
  if (size < sizeof(struct mountsup_statmount) + 1) return EOVERFLOW;
  if (syscall(MOUNTSUP_NR_STATMOUNT, &request, buffer, size, 0) != 0) return errno;
  const struct mountsup_statmount *result = buffer;
  // Offsets of strings the kernel left out are 0; make them point at an empty string. The kernel
  // reserves one at offset 0 once it writes any string, but not when it writes none.
  static const char empty[] = "";
  const char *strings = result->str;
  uint64_t mask = result->mask;
#define STRING(bit, field) ((mask & (bit)) ? strings + result->field : empty)
  *info = (mountsup_mount_info){
      .mount_id = result->mnt_id,
      .parent_id = result->mnt_parent_id,
      .old_id = result->mnt_id_old,
      .old_parent_id = result->mnt_parent_id_old,
      .device_major = result->sb_dev_major,
      .device_minor = result->sb_dev_minor,
      .reported = mask,
      .mountpoint = STRING(MOUNTSUP_STATMOUNT_MNT_POINT, mnt_point),
      .fs_type = STRING(MOUNTSUP_STATMOUNT_FS_TYPE, fs_type),
      .fs_subtype = STRING(MOUNTSUP_STATMOUNT_FS_SUBTYPE, fs_subtype),
      .source = STRING(MOUNTSUP_STATMOUNT_SB_SOURCE, sb_source),
      .options = STRING(MOUNTSUP_STATMOUNT_MNT_OPTS, mnt_opts),
  };
#undef STRING
  return 0;
}
