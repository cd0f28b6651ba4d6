import CLinuxSupport
import Glibc
import MountConfig
import MountCore

/// A worker process as the event loop sees it: its pidfd, our end of its notify socketpair and
/// the read end of its output pipe, plus what the mount table looked like before it started.
final class WorkerProcess {
  let pid: Int32
  let pidfd: Int32
  /// Our end of the socketpair; -1 once the worker closed its end.
  var notifyFD: Int32
  /// Mode `notify`: the worker's own NOTIFY_SOCKET.
  var sdNotify: WorkerNotifySocket?
  /// Read end of the worker's stdout+stderr; -1 at EOF.
  var outputFD: Int32
  var pendingOutput: [UInt8] = []
  /// The mountpoint it was started for (a reload may change the spec while it runs).
  let mountpoint: String
  /// FUSE mount ids at the mountpoint before the spawn: only a mount not in here is this worker's.
  let baseline: Set<Int>
  /// The worker's FUSE mount once mountinfo has shown it.
  var mountID: Int?
  /// Root may unmount any mount; other users go through fusermount3.
  let unmountsAsRoot: Bool

  init(
    pid: Int32, pidfd: Int32, notifyFD: Int32, outputFD: Int32, mountpoint: String,
    baseline: Set<Int>, unmountsAsRoot: Bool
  ) {
    self.pid = pid
    self.pidfd = pidfd
    self.notifyFD = notifyFD
    self.outputFD = outputFD
    self.mountpoint = mountpoint
    self.baseline = baseline
    self.unmountsAsRoot = unmountsAsRoot
  }

  /// Signals the worker through its pidfd (never a recycled pid) and its process group (helpers
  /// it started, such as sshfs's ssh).
  func signal(_ signal: Int32) {
    kill(-pid, signal)
    mountsup_pidfd_signal(pidfd, signal)
  }

  /// The FUSE mount this worker made, if the table holds one at its mountpoint.
  func ownMount(in table: MountTable) -> MountEntry? {
    table.fuseMounts(at: mountpoint).last { !baseline.contains($0.id) }
  }
}

/// Everything needed to exec a worker, resolved before the fork so that the child only makes
/// async-signal-safe calls.
struct LaunchPlan {
  var executable: String
  var arguments: [String]
  var environment: [String]
  var credentials: (uid: uid_t, gid: gid_t, groups: [gid_t])?

  /// Environment variables of the supervisor that must not leak into workers: the service
  /// manager's sockets belong to the supervisor alone.
  static let withheld: Set<String> = [
    "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID",
    "JOURNAL_STREAM", "MOUNTSUP_NOTIFY_FD", "MOUNTSUP_NAME", "MOUNTSUP_MOUNTPOINT",
  ]

  /// - Parameter notifySocket: mode `notify`: the worker's own `NOTIFY_SOCKET` address.
  init(
    spec: MountSpec, inherited: [String: String], searchPath: [String], notifySocket: String? = nil
  ) throws(Failure) {
    guard let command = spec.command.first else { throw Failure(summary: "the command is empty") }
    executable = try Self.resolve(command, searchPath: searchPath)
    arguments = spec.command
    var variables = inherited.filter { !Self.withheld.contains($0.key) }
    if let user = spec.user {
      guard let entry = getpwnam(user) else {
        throw Failure(summary: "user \"\(user)\" does not exist")
      }
      var gid = entry.pointee.pw_gid
      if let group = spec.group {
        guard let groupEntry = getgrnam(group) else {
          throw Failure(summary: "group \"\(group)\" does not exist")
        }
        gid = groupEntry.pointee.gr_gid
      }
      var count: Int32 = 64
      var groups = [gid_t](repeating: 0, count: Int(count))
      if getgrouplist(entry.pointee.pw_name, gid, &groups, &count) < 0 {
        groups = [gid_t](repeating: 0, count: Int(count))
        getgrouplist(entry.pointee.pw_name, gid, &groups, &count)
      }
      credentials = (entry.pointee.pw_uid, gid, Array(groups.prefix(Int(count))))
      variables["USER"] = user
      variables["LOGNAME"] = user
      variables["HOME"] = String(cString: entry.pointee.pw_dir)
    } else if let group = spec.group {
      guard let groupEntry = getgrnam(group) else {
        throw Failure(summary: "group \"\(group)\" does not exist")
      }
      credentials = (getuid(), groupEntry.pointee.gr_gid, [groupEntry.pointee.gr_gid])
    }
    variables["MOUNTSUP_NOTIFY_FD"] = "3"
    variables["MOUNTSUP_NAME"] = spec.name
    variables["MOUNTSUP_MOUNTPOINT"] = spec.mountpoint
    if let notifySocket { variables["NOTIFY_SOCKET"] = notifySocket }
    for (key, value) in spec.environment { variables[key] = value }
    environment = variables.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
  }

  /// `command` itself when it holds a slash; otherwise the first executable of that name on
  /// the search path.
  static func resolve(_ command: String, searchPath: [String]) throws(Failure) -> String {
    if command.contains("/") {
      guard access(command, X_OK) == 0 else {
        throw Failure(summary: "cannot execute \(command): \(errorText(errno))")
      }
      return command
    }
    for directory in searchPath where !directory.isEmpty {
      let candidate = directory + "/" + command
      var info = stat()
      if stat(candidate, &info) == 0, info.st_mode & S_IFMT == S_IFREG, access(candidate, X_OK) == 0
      {
        return candidate
      }
    }
    throw Failure(
      summary: "command \"\(command)\" not found (searched \(searchPath.joined(separator: ":"))); "
        + "install it or give its absolute path in `command`")
  }

  /// Forks and execs the worker with `notify` as fd 3 and `output` as stdout and stderr.
  func launch(notify: Int32, output: Int32) throws(Failure) -> (pid: Int32, pidfd: Int32) {
    let argv = arguments.map { strdup($0) } + [nil]
    let envp = environment.map { strdup($0) } + [nil]
    defer {
      for pointer in argv + envp { free(pointer) }
    }
    var pid: pid_t = 0
    var pidfd: Int32 = -1
    var step: UnsafePointer<CChar>? = nil
    let groups = credentials?.groups ?? []
    let code = executable.withCString { path in
      argv.withUnsafeBufferPointer { argvBuffer in
        envp.withUnsafeBufferPointer { envpBuffer in
          groups.withUnsafeBufferPointer { groupBuffer in
            var request = mountsup_spawn_request()
            request.path = path
            request.argv = argvBuffer.baseAddress
            request.envp = envpBuffer.baseAddress
            request.notify_fd = notify
            request.output_fd = output
            request.switch_ids = credentials == nil ? 0 : 1
            request.uid = credentials?.uid ?? 0
            request.gid = credentials?.gid ?? 0
            request.groups = groupBuffer.baseAddress
            request.group_count = groupBuffer.count
            request.death_signal = SIGTERM
            return mountsup_spawn(&request, &pid, &pidfd, &step)
          }
        }
      }
    }
    guard code == 0 else {
      let what = step.map { String(cString: $0) } ?? "spawn"
      throw Failure(
        summary: "cannot start \(executable): \(what) failed: \(errorText(code))", errno: code)
    }
    return (pid, pidfd)
  }
}

/// Runs a helper such as `fusermount3` to completion (it returns in milliseconds); its output
/// goes to `/dev/null`. Returns its exit status, or nil if it could not run.
func runHelper(_ arguments: [String]) -> ExitStatus? {
  guard let plan = try? LaunchPlan.helper(arguments) else { return nil }
  let devnull = open("/dev/null", O_WRONLY | O_CLOEXEC)
  defer { close(devnull) }
  guard let (pid, pidfd) = try? plan.launch(notify: -1, output: devnull) else { return nil }
  defer { close(pidfd) }
  var status: Int32 = 0
  retryingOnInterrupt { waitpid(pid, &status, 0) }
  return status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
}

extension LaunchPlan {
  static func helper(_ arguments: [String]) throws(Failure) -> LaunchPlan {
    var plan = try LaunchPlan(
      spec: MountSpec(name: "helper", mountpoint: "/", command: arguments),
      inherited: ["PATH": defaultSearchPath.joined(separator: ":")], searchPath: defaultSearchPath)
    plan.environment = ["PATH=\(defaultSearchPath.joined(separator: ":"))"]
    return plan
  }

  static let defaultSearchPath = [
    "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin",
  ]
}
