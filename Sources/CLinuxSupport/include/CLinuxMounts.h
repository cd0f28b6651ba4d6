#ifndef MOUNTSUP_CLINUXMOUNTS_H
#define MOUNTSUP_CLINUXMOUNTS_H

// The mount table through fanotify mount events (Linux 6.15), statmount(2) and listmount(2)
// (6.8). Debian 12's headers predate all three: what is needed is defined in mounts.c.

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// Event bits of `mountsup_mount_event.mask`.
#define MOUNTSUP_MOUNT_ATTACHED 0x01000000ULL /* FAN_MNT_ATTACH */
#define MOUNTSUP_MOUNT_DETACHED 0x02000000ULL /* FAN_MNT_DETACH */
#define MOUNTSUP_MOUNT_OVERFLOW 0x00004000ULL /* FAN_Q_OVERFLOW: events were lost */

/// One fanotify mount event: attached, detached (both for a move), or the queue overflowed.
typedef struct {
  uint64_t mask;
  uint64_t mount_id;  ///< the unique mount ID; 0 for an overflow
} mountsup_mount_event;

/// A fanotify group that reports every mount attached to or detached from this process's mount
/// namespace (non-blocking, close-on-exec). -1 with errno: EINVAL on a kernel without mount
/// events, EPERM without CAP_SYS_ADMIN.
int mountsup_mount_events_open(void);

/// Reads the pending events into `events`: their number, 0 at EOF, -1 with errno (EAGAIN when
/// nothing is pending).
ssize_t mountsup_mount_events_read(int fd, mountsup_mount_event *events, size_t capacity);

/// listmount(2): the unique IDs of the mounts of this namespace below this process's root,
/// ascending, starting after `after` (0 for the first batch). The count, or -1 with errno.
ssize_t mountsup_listmount(uint64_t after, uint64_t *ids, size_t capacity);

/// One mount as statmount(2) describes it. The strings point into the caller's buffer; a string
/// the kernel did not report (empty, or the mountpoint of a mount outside this root) is "".
typedef struct {
  uint64_t mount_id;
  uint64_t parent_id;
  uint32_t old_id;  ///< the reused ID of mountinfo
  uint32_t old_parent_id;
  uint32_t device_major;
  uint32_t device_minor;
  uint64_t reported;  ///< the STATMOUNT_ mask bits the kernel filled in
  const char *mountpoint;
  const char *fs_type;
  const char *fs_subtype;  ///< "sshfs" of "fuse.sshfs"
  const char *source;
  const char *options;  ///< the superblock's own options, e.g. "user_id=0,group_id=0"
} mountsup_mount_info;

/// Mask bits of `mountsup_mount_info.reported`.
#define MOUNTSUP_STATMOUNT_MNT_POINT 0x00000010ULL
#define MOUNTSUP_STATMOUNT_SB_SOURCE 0x00000200ULL

/// statmount(2) of one mount into `buffer`. 0, or an errno: ENOENT when the mount is gone,
/// EOVERFLOW when `size` is too small (call again with a larger buffer).
int mountsup_statmount(uint64_t mount_id, void *buffer, size_t size, mountsup_mount_info *info);

#endif
