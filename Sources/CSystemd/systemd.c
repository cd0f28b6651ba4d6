#define _GNU_SOURCE
#include "CSystemd.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

static struct {
  __typeof__(sd_listen_fds_with_names) *listen_fds_with_names;
  __typeof__(sd_is_socket_unix) *is_socket_unix;
  __typeof__(sd_watchdog_enabled) *watchdog_enabled;
  __typeof__(sd_journal_sendv) *journal_sendv;
} functions;
static char load_error[256];
static pthread_once_t loaded = PTHREAD_ONCE_INIT;

static void load(void) {
  void *library = dlopen("libsystemd.so.0", RTLD_NOW | RTLD_LOCAL);
  if (library == NULL) {
    const char *why = dlerror();
    strncpy(load_error, why ? why : "libsystemd.so.0: not loadable", sizeof load_error - 1);
    return;
  }
  functions.listen_fds_with_names = dlsym(library, "sd_listen_fds_with_names");
  functions.is_socket_unix = dlsym(library, "sd_is_socket_unix");
  functions.watchdog_enabled = dlsym(library, "sd_watchdog_enabled");
  functions.journal_sendv = dlsym(library, "sd_journal_sendv");
}

/// Loads libsystemd once (from any thread: the log handler may be the first caller).
static void ensure_loaded(void) { pthread_once(&loaded, load); }

int mountsup_sd_listen_fds_with_names(int unset_environment, char ***names) {
  if (getenv("LISTEN_FDS") == NULL) return 0;
  ensure_loaded();
  if (functions.listen_fds_with_names == NULL) return -ENOSYS;
  return functions.listen_fds_with_names(unset_environment, names);
}

int mountsup_sd_is_socket_unix(int fd, int type, int listening, const char *path, size_t length) {
  ensure_loaded();
  if (functions.is_socket_unix == NULL) return -ENOSYS;
  return functions.is_socket_unix(fd, type, listening, path, length);
}

int mountsup_sd_watchdog_enabled(int unset_environment, uint64_t *usec) {
  if (getenv("WATCHDOG_USEC") == NULL) return 0;
  ensure_loaded();
  if (functions.watchdog_enabled == NULL) return -ENOSYS;
  return functions.watchdog_enabled(unset_environment, usec);
}

int mountsup_sd_journal_sendv(const struct iovec *iov, int n) {
  ensure_loaded();
  if (functions.journal_sendv == NULL) return -ENOSYS;
  return functions.journal_sendv(iov, n);
}

const char *mountsup_sd_load_error(void) {
  ensure_loaded();
  return load_error[0] ? load_error : NULL;
}
