#ifndef MOUNTSUP_CSYSTEMD_H
#define MOUNTSUP_CSYSTEMD_H

#include <stdint.h>
#include <sys/uio.h>

// libsystemd, loaded on first need. A daemon not started by systemd (a shell, a container, the
// Kubernetes DaemonSet) never loads it: linked, it and the six libraries it needs cost every
// start about 0.75 ms before main. Each call behaves as libsystemd's does when the environment
// says nothing (no LISTEN_FDS, no WATCHDOG_USEC); when it is needed but cannot be loaded, the
// call fails with -ENOSYS and `mountsup_sd_load_error` says why.

/// The first descriptor passed by the service manager (`SD_LISTEN_FDS_START`).
#define MOUNTSUP_SD_LISTEN_FDS_START 3

/// `sd_listen_fds_with_names`; 0 without LISTEN_FDS.
int mountsup_sd_listen_fds_with_names(int unset_environment, char ***names);
/// `sd_is_socket_unix`.
int mountsup_sd_is_socket_unix(int fd, int type, int listening, const char *path, size_t length);
/// `sd_watchdog_enabled`; 0 without WATCHDOG_USEC.
int mountsup_sd_watchdog_enabled(int unset_environment, uint64_t *usec);
/// `sd_journal_sendv`.
int mountsup_sd_journal_sendv(const struct iovec *iov, int n);
/// Why libsystemd could not be loaded (dlerror's words), or NULL.
const char *mountsup_sd_load_error(void);

#endif
