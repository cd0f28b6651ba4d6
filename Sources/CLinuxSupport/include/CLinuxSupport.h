#ifndef MOUNTSUP_CLINUXSUPPORT_H
#define MOUNTSUP_CLINUXSUPPORT_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/xattr.h>

#include "CLinuxMounts.h"

/// What a worker is started with. Every fd of the parent above 2 is closed in the child except
/// `notify_fd`, which becomes fd 3.
typedef struct {
  const char *path;          ///< absolute path of the executable (resolved by the caller)
  char *const *argv;         ///< NULL-terminated
  char *const *envp;         ///< NULL-terminated
  int notify_fd;             ///< becomes fd 3, or -1 for none
  int output_fd;             ///< becomes stdout and stderr; stdin is /dev/null
  int switch_ids;            ///< non-zero: setgroups/setgid/setuid to the fields below
  uid_t uid;
  gid_t gid;
  const gid_t *groups;
  size_t group_count;
  int death_signal;          ///< sent to the child when the spawning thread exits
  int set_nofile;            ///< non-zero: the child gets RLIMIT_NOFILE `nofile` (the soft limit
                             ///< the supervisor inherited, before it raised its own)
  struct rlimit nofile;
} mountsup_spawn_request;

/// Three descriptors the spawning thread keeps for itself (see `mountsup_spawn_slots_open`):
/// the worker's descriptors are placed in the first two for the moment of a spawn, so that the
/// child can take a copy of only the low end of the descriptor table; the third stays on
/// /dev/null, what the others return to.
typedef struct {
  int notify, output, placeholder;
  /// Every descriptor from here up is left out of the child's copy of the table.
  int floor;
} mountsup_spawn_slots;

/// Opens the slots (placeholders on /dev/null, close-on-exec). Call it early, while few
/// descriptors are open: everything below the slots is copied into each child. 0 or an errno.
int mountsup_spawn_slots_open(mountsup_spawn_slots *slots);

/// Starts a process in its own session. Returns 0 with `*pid` and `*pidfd` set, or an errno
/// value with `*failed_step` naming the step that failed (in the child or the parent). With
/// `slots` (may be NULL), the cost of a spawn does not grow with the number of open descriptors.
int mountsup_spawn(const mountsup_spawn_request *request, const mountsup_spawn_slots *slots,
                   pid_t *pid, int *pidfd, const char **failed_step);

/// Reaps the process behind `pidfd` if it has exited. Returns 1 and fills the outputs when it
/// has, 0 when it still runs, -1 with errno on error.
int mountsup_reap(int pidfd, int *exit_code, int *exit_signal);

/// Sends `signal` to the process behind `pidfd`; -1 with errno on error.
int mountsup_pidfd_signal(int pidfd, int signal);

/// Blocks the given signals in the calling thread (inherited by threads it creates) and returns
/// a signalfd that reads them, or -1 with errno.
int mountsup_signalfd(const int *signals, size_t count);

/// Reads one pending signal number from a signalfd, or -1.
int mountsup_read_signal(int signalfd);

/// Sets O_NONBLOCK; -1 with errno on error.
int mountsup_set_nonblocking(int fd);

/// Clears FD_CLOEXEC, for an fd that must survive exec; -1 with errno on error.
int mountsup_clear_cloexec(int fd);

/// Enables SO_PASSCRED on a datagram socket so senders' credentials arrive with each message.
int mountsup_enable_passcred(int fd);

/// Receives one datagram with its sender's credentials (SCM_CREDENTIALS). Returns the length,
/// or -1 with errno; `*sender_pid` is 0 when no credentials came along.
ssize_t mountsup_recv_with_pid(int fd, void *buffer, size_t length, pid_t *sender_pid);

/// The peer's credentials of a connected unix socket (SO_PEERCRED); -1 with errno on error.
int mountsup_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid);

/// pipe2 with O_CLOEXEC (glibc declares pipe2 only under _GNU_SOURCE); -1 with errno.
int mountsup_pipe(int fds[2]);

/// An anonymous memory file that stays open across execve (no MFD_CLOEXEC): an upgrade hands
/// its state to the new binary in one. -1 with errno.
int mountsup_memfd(const char *name);

/// Sets or clears FD_CLOEXEC; -1 with errno.
int mountsup_set_cloexec(int fd, int on);

/// The session id of a process, or -1.
pid_t mountsup_session_of(pid_t pid);

/// Gives the calling thread alone the user `uid` and group `gid` (real, effective and saved; `gid`
/// as its only supplementary group). It cannot get its old ids back: call it on a thread that
/// ends afterwards. -1 with errno on error.
int mountsup_thread_assume_ids(uid_t uid, gid_t gid);

/// Receives one datagram without waiting, with up to `capacity` descriptors passed along
/// (SCM_RIGHTS, close-on-exec; further ones are closed). Returns the length, or -1 with errno.
ssize_t mountsup_receive_with_fds(int fd, void *buffer, size_t length, int *fds, int capacity,
                                  int *count);

/// Sends one datagram without waiting, passing `count` (at most 8) descriptors along.
/// 0 or an errno.
int mountsup_send_with_fds(int fd, const void *buffer, size_t length, const int *fds, int count);

#endif
