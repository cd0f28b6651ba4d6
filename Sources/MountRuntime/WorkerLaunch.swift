import CLinuxSupport
import Glibc
import MountConfig
import MountCore

/// Everything needed to exec a worker, resolved before the fork so that the child only makes
/// async-signal-safe calls.
struct LaunchPlan {
  var executable: String
  var arguments: [String]
  /// What the worker inherits of the supervisor's environment, but for the keys `environment`
  /// sets.
  var inherited: InheritedEnvironment
  /// The variables of this worker ("KEY=VALUE"): its mount's, its spec's and its account's.
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
  ///   - inherited: the supervisor's environment without `withheld`.
  ///   - notifySocket: mode `notify`: the worker's own `NOTIFY_SOCKET` address.
  ///   - resuming: the worker is a successor that serves a held FUSE connection, which waits
  ///     as the first datagram on its fd 3 (`MOUNTSUP_RESUME=1`).
  init(
    spec: MountSpec, executable: String, inherited: InheritedEnvironment,
    notifySocket: String? = nil, resuming: Bool = false
  ) throws(RuntimeError) {
    self.executable = executable
    self.inherited = inherited
    arguments = spec.command
    // MOUNTSUP_SUPERVISOR is the one MOUNTSUP_ variable a worker inherits: its supervisor's.
    var variables: [String: String] = [:]
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

  /// Forks and execs the worker with `notify` as fd 3 and `output` as stdout and stderr; returns
  /// its pid and a pidfd for it. With `slots`, the cost does not grow with the descriptors open.
  func launch(
    notify: Descriptor?, output: Descriptor, slots: SpawnSlots? = nil
  ) throws(RuntimeError) -> (pid: pid_t, pidfd: Descriptor) {
    let argv = arguments.map { strdup($0) } + [nil]
    let own = environment.map { strdup($0) }
    defer {
      for pointer in argv + own { free(pointer) }
    }
    let envp = inherited.lines(without: environment) + own + [nil]
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
    var helper = try? LaunchPlan(
      spec: MountSpec(name: "helper", mountpoint: "/", command: arguments),
      executable: executable, inherited: InheritedEnvironment([:]))
  else { return nil }
  helper.environment = ["PATH=\(CommandLookup.defaultSearchPath.joined(separator: ":"))"]
  let devnull = open("/dev/null", O_WRONLY | O_CLOEXEC)
  guard devnull >= 0, let (pid, _) = try? helper.launch(notify: nil, output: Descriptor(devnull))
  else { return nil }
  var status: Int32 = 0
  retryingOnInterrupt { waitpid(pid, &status, 0) }
  return status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
}

/// The supervisor's environment as its workers inherit it, made into C strings once: a
/// thousand spawns built and copied the same few dozen "KEY=VALUE" lines a thousand times.
final class InheritedEnvironment: @unchecked Sendable {
  private let variables: [String: String]
  private let keys: [String]
  private let lines: [UnsafeMutablePointer<CChar>?]

  /// `environment` without `LaunchPlan.withheld`.
  init(_ environment: [String: String]) {
    let variables = environment.filter { !LaunchPlan.withheld.contains($0.key) }
    self.variables = variables
    keys = Array(variables.keys)
    lines = keys.map { strdup("\($0)=\(variables[$0]!)") }
  }

  deinit { for line in lines { free(line) } }

  /// The lines but for the variables `overrides` ("KEY=VALUE") sets; valid while this object is.
  func lines(without overrides: [String]) -> [UnsafeMutablePointer<CChar>?] {
    let overridden = overrides.compactMap { line -> String? in
      let key = String(line.prefix { $0 != "=" })
      return variables[key] == nil ? nil : key
    }
    guard !overridden.isEmpty else { return lines }
    let skipped = Set(overridden)
    return keys.indices.filter { !skipped.contains(keys[$0]) }.map { lines[$0] }
  }
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
