import CLinuxSupport
import Glibc
import MountConfig
import MountCore

/// Everything needed to exec a worker, resolved before the fork so that the child only makes
/// async-signal-safe calls.
struct LaunchPlan {
  var executable: String
  var arguments: [String]
  var environment: [String]
  var credentials: (uid: uid_t, gid: gid_t, groups: [gid_t])?
  /// The descriptor limit the worker gets: the soft limit the supervisor inherited.
  var descriptorLimit: rlimit?

  /// Environment variables of the supervisor that must not leak into workers: the service
  /// manager's sockets belong to the supervisor alone.
  static let withheld: Set<String> = [
    "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID",
    "JOURNAL_STREAM", "MOUNTSUP_NOTIFY_FD", "MOUNTSUP_NAME", "MOUNTSUP_MOUNTPOINT",
    "MOUNTSUP_HANDOVER", "MOUNTSUP_RESUME", "FDSTORE",
  ]

  /// - Parameters:
  ///   - inherited: the supervisor's environment without `withheld` (see `workerEnvironment`).
  ///   - notifySocket: mode `notify`: the worker's own `NOTIFY_SOCKET` address.
  ///   - resuming: the worker is a successor that serves a held FUSE connection, which waits
  ///     as the first datagram on its fd 3 (`MOUNTSUP_RESUME=1`).
  init(
    spec: MountSpec, executable: String, inherited: [String: String],
    notifySocket: String? = nil, resuming: Bool = false
  ) throws(RuntimeError) {
    self.executable = executable
    arguments = spec.command
    // MOUNTSUP_SUPERVISOR is the one MOUNTSUP_ variable a worker inherits: its supervisor's.
    var variables = inherited
    if let user = spec.user {
      guard let account = Accounts.user(user) else {
        throw RuntimeError(.unknownAccount, "user \"\(user)\" does not exist")
      }
      var gid = account.gid
      if let group = spec.group {
        guard let groupID = Accounts.groupID(of: group) else {
          throw RuntimeError(.unknownAccount, "group \"\(group)\" does not exist")
        }
        gid = groupID
      }
      credentials = (account.uid, gid, Accounts.groups(ofUser: user, primary: gid))
      variables["USER"] = user
      variables["LOGNAME"] = user
      variables["HOME"] = account.home
    } else if let group = spec.group {
      guard let groupID = Accounts.groupID(of: group) else {
        throw RuntimeError(.unknownAccount, "group \"\(group)\" does not exist")
      }
      credentials = (getuid(), groupID, [groupID])
    }
    variables["MOUNTSUP_NOTIFY_FD"] = "3"
    variables["MOUNTSUP_NAME"] = spec.name
    variables["MOUNTSUP_MOUNTPOINT"] = spec.mountpoint
    // Kit workers hand over their FUSE connection only to a supervisor that takes it.
    variables["MOUNTSUP_HANDOVER"] = "1"
    if resuming { variables["MOUNTSUP_RESUME"] = "1" }
    if let notifySocket { variables["NOTIFY_SOCKET"] = notifySocket }
    for (key, value) in spec.environment { variables[key] = value }
    environment = variables.map { "\($0.key)=\($0.value)" }
  }

  /// The executable `command` names, by `commands`.
  static func resolve(_ command: String?, by commands: CommandLookup) throws(RuntimeError)
    -> String
  {
    guard let command else { throw RuntimeError(.executableNotFound, "the command is empty") }
    switch commands.resolve(command) {
    case .success(let path): return path
    case .failure(let failure): throw RuntimeError(.executableNotFound, "cannot run \(failure)")
    }
  }

  /// What of the supervisor's environment workers inherit: filtered once, not per spawn.
  static func workerEnvironment(_ environment: [String: String]) -> [String: String] {
    environment.filter { !withheld.contains($0.key) }
  }

  /// Forks and execs the worker with `notify` as fd 3 and `output` as stdout and stderr; returns
  /// its pid and a pidfd for it. With `slots`, the cost does not grow with the descriptors open.
  func launch(
    notify: Descriptor?, output: Descriptor, slots: SpawnSlots? = nil
  ) throws(RuntimeError) -> (pid: pid_t, pidfd: Descriptor) {
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
            request.notify_fd = notify?.raw ?? -1
            request.output_fd = output.raw
            request.switch_ids = credentials == nil ? 0 : 1
            request.uid = credentials?.uid ?? 0
            request.gid = credentials?.gid ?? 0
            request.groups = groupBuffer.baseAddress
            request.group_count = groupBuffer.count
            request.death_signal = SIGTERM
            if let descriptorLimit {
              request.set_nofile = 1
              request.nofile = descriptorLimit
            }
            guard var placement = slots?.placement else {
              return mountsup_spawn(&request, nil, &pid, &pidfd, &step)
            }
            return mountsup_spawn(&request, &placement, &pid, &pidfd, &step)
          }
        }
      }
    }
    guard code == 0 else {
      let what = step.map { String(cString: $0) } ?? "spawn"
      throw RuntimeError(.spawn, "cannot start \(executable): \(what) failed", errno: code)
    }
    return (pid, Descriptor(pidfd))
  }
}

/// Runs a helper such as `fusermount3` to completion (it returns in milliseconds); its output
/// goes to `/dev/null`. Returns its exit status, or nil if it could not run.
func runHelper(_ arguments: [String]) -> ExitStatus? {
  let commands = CommandLookup(searchPath: CommandLookup.defaultSearchPath)
  guard let executable = try? LaunchPlan.resolve(arguments.first, by: commands),
    let plan = try? LaunchPlan(
      spec: MountSpec(name: "helper", mountpoint: "/", command: arguments),
      executable: executable, inherited: [:])
  else { return nil }
  var helper = plan
  helper.environment = ["PATH=\(CommandLookup.defaultSearchPath.joined(separator: ":"))"]
  let devnull = open("/dev/null", O_WRONLY | O_CLOEXEC)
  guard devnull >= 0, let (pid, _) = try? helper.launch(notify: nil, output: Descriptor(devnull))
  else { return nil }
  var status: Int32 = 0
  retryingOnInterrupt { waitpid(pid, &status, 0) }
  return status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
}

/// Three descriptors kept low in the table for spawning (see `mountsup_spawn_slots`): a child
/// copies only the table below them, so a spawn costs the same with 10 mounts or 5,000.
/// Open them early, before the descriptors of mounts exist; they live as long as the process.
final class SpawnSlots {
  let placement: mountsup_spawn_slots

  init() throws(RuntimeError) {
    var slots = mountsup_spawn_slots()
    let code = mountsup_spawn_slots_open(&slots)
    guard code == 0 else { throw RuntimeError(.descriptors, "spawn slots", errno: code) }
    placement = slots
  }
}
