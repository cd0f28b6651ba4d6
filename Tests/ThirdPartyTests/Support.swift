import CLinuxSupport
import Foundation
import Glibc
import MountSupTestSupport
import Testing

// The harness of MountSupTestSupport (a sandbox per test, a NOTIFY_SOCKET that snapshots the mount
// table when READY arrives, the daemon as a child process), extended for programs the project did
// not write: packages, an sshd, another user.

// MARK: The machine

/// The user that workers and daemons run as in the tests of other users; left in place afterwards.
let testUserName = "mountsup-test-user"

/// The programs under test and what else the tests run, with the Debian package of each.
private let requiredPrograms: [(path: String, package: String)] = [
  ("/usr/bin/bindfs", "bindfs"), ("/usr/bin/squashfuse", "squashfuse"),
  ("/usr/bin/mksquashfs", "squashfs-tools"), ("/usr/bin/rclone", "rclone"),
  ("/usr/bin/sshfs", "sshfs"),
  ("/usr/sbin/sshd", "openssh-server"), ("/usr/bin/ssh-keygen", "openssh-client"),
  ("/usr/bin/fusermount3", "fuse3"), ("/usr/bin/setpriv", "util-linux"),
]

/// Why the machine cannot run these tests, or nil once it can. Evaluated once per run: installs
/// the missing packages (as `scripts/setup.sh` does) and sets up what the programs expect.
let machineProblem: String? = prepareMachine()

private func prepareMachine() -> String? {
  let missing = requiredPrograms.filter { access($0.path, X_OK) != 0 }.map(\.package)
  if !missing.isEmpty {
    let environment = ["DEBIAN_FRONTEND": "noninteractive"]
    let update = run(["apt-get", "update", "-qq"], environment: environment)
    guard update.status == 0 else { return "apt-get update failed: \(update.output)" }
    let install = run(
      ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
      environment: environment)
    guard install.status == 0 else { return "installing \(missing) failed: \(install.output)" }
  }
  // sshd refuses to start without its privilege separation directory, which the package's
  // systemd unit creates at boot.
  if access("/run/sshd", F_OK) != 0, mkdir("/run/sshd", 0o755) != 0 {
    return "mkdir /run/sshd: \(String(cString: strerror(errno)))"
  }
  if getpwnam(testUserName) == nil {
    let added = run([
      "useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", testUserName,
    ])
    guard added.status == 0 else { return "useradd \(testUserName) failed: \(added.output)" }
  }
  // libfuse in a program that is not root opens /dev/fuse itself before it falls back to
  // fusermount3, and gives up on EACCES. The kernel creates the device 0666; some containers
  // make it 0600.
  var device = stat()
  guard stat("/dev/fuse", &device) == 0 else { return "no /dev/fuse" }
  if device.st_mode & 0o666 != 0o666, chmod("/dev/fuse", 0o666) != 0 {
    return "chmod 0666 /dev/fuse: \(String(cString: strerror(errno)))"
  }
  return nil
}

/// The test user's ids.
struct TestUser {
  var name: String
  var uid: uid_t
  var gid: gid_t

  static var current: TestUser {
    let entry = getpwnam(testUserName)!
    return TestUser(name: testUserName, uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid)
  }

  /// What runs a command as this user (and only its own group), under the same pid.
  var setpriv: [String] {
    ["/usr/bin/setpriv", "--reuid=\(uid)", "--regid=\(gid)", "--clear-groups", "--"]
  }

  /// `command` run as this user, for `Process`.
  func wrap(_ command: [String]) -> [String] { setpriv + command }

  /// A file as this user reads it; nil when it cannot.
  func read(_ path: String) -> String? {
    let result = run(wrap(["/bin/cat", path]))
    return result.status == 0 ? result.output : nil
  }
}

/// Runs a short command to completion; its exit status and its stdout and stderr together.
@discardableResult
func run(_ command: [String], environment: [String: String] = [:]) -> (
  status: Int32, output: String
) {
  let process = Process()
  process.executableURL = URL(
    fileURLWithPath: command[0].hasPrefix("/") ? command[0] : "/usr/bin/env")
  process.arguments = command[0].hasPrefix("/") ? Array(command.dropFirst()) : command
  process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
  let output = Pipe()
  process.standardOutput = output
  process.standardError = output
  process.standardInput = FileHandle.nullDevice
  do { try process.run() } catch { return (-1, "\(error)") }
  let data = output.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

// MARK: sshd

/// An sshd of the test's own on 127.0.0.1 with its own host key, client key and config, run
/// the inetd way: the test accepts each connection itself and hands it to `sshd -i`, so the port
/// is the kernel's choice (no clash with parallel tests) and the test decides when the server
/// answers.
final class SSHServer {
  let port: UInt16
  /// The private key sshfs logs in with.
  let clientKey: String
  private let config: String
  private let logPath: String
  private var listener: Int32
  private var sessions: [Process] = []

  init(in sandbox: Sandbox) throws {
    let directory = sandbox.path + "/ssh"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    clientKey = directory + "/client_key"
    for key in [directory + "/host_key", clientKey] {
      let made = run(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
      guard made.status == 0 else { throw TestFailure("ssh-keygen: \(made.output)") }
    }
    try FileManager.default.copyItem(
      atPath: clientKey + ".pub", toPath: directory + "/authorized_keys")
    config = try sandbox.write(
      "ssh/sshd_config",
      """
      HostKey \(directory)/host_key
      AuthorizedKeysFile \(directory)/authorized_keys
      AuthenticationMethods publickey
      PermitRootLogin prohibit-password
      UsePAM no
      StrictModes no
      Subsystem sftp internal-sftp

      """)
    logPath = directory + "/sshd.log"
    _ = FileManager.default.createFile(atPath: logPath, contents: nil)
    let configTest = run(["/usr/sbin/sshd", "-t", "-f", config])
    guard configTest.status == 0 else { throw TestFailure("sshd -t: \(configTest.output)") }

    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(fd, $0, length) == 0 && listen(fd, 8) == 0 && getsockname(fd, $0, &length) == 0
      }
    }
    guard bound else {
      close(fd)
      throw TestFailure("cannot listen on 127.0.0.1: \(String(cString: strerror(errno)))")
    }
    listener = fd
    port = UInt16(bigEndian: address.sin_port)
  }

  deinit { stop() }

  /// Waits for a client's connection; nil when none came in time.
  func accept(within seconds: Double = 15) -> Int32? {
    var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
    guard poll(&poller, 1, Int32(seconds * 1000)) > 0 else { return nil }
    let connection = Glibc.accept(listener, nil, nil)
    guard connection >= 0 else { return nil }
    _ = fcntl(connection, F_SETFD, FD_CLOEXEC)
    return connection
  }

  /// Hands a connection to an `sshd -i` of its own (it serves that one client, then exits).
  func serve(_ connection: Int32) throws {
    defer { close(connection) }
    let session = Process()
    session.executableURL = URL(fileURLWithPath: "/usr/sbin/sshd")
    session.arguments = ["-i", "-e", "-f", config]
    session.standardInput = FileHandle(fileDescriptor: connection, closeOnDealloc: false)
    session.standardOutput = FileHandle(fileDescriptor: connection, closeOnDealloc: false)
    let log = FileHandle(forWritingAtPath: logPath)
    log?.seekToEndOfFile()
    session.standardError = log
    try session.run()
    sessions.append(session)
  }

  var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

  /// Ends every session (SIGKILL: children of the test runner inherit its blocked SIGTERM) and
  /// stops listening. Safe to call twice.
  func stop() {
    for session in sessions where session.isRunning {
      kill(session.processIdentifier, SIGKILL)
      session.waitUntilExit()
    }
    sessions.removeAll()
    if listener >= 0 { close(listener) }
    listener = -1
  }

  /// The sshfs command for `remotePath` on this server: foreground, key login, no host key
  /// questions, no ssh_config of the machine.
  func sshfsCommand(remotePath: String, port: UInt16? = nil) -> [String] {
    let options = [
      "port=\(port ?? self.port)", "IdentityFile=\(clientKey)", "StrictHostKeyChecking=no",
      "UserKnownHostsFile=/dev/null", "BatchMode=yes",
    ]
    return [
      "sshfs", "-f", "-F", "/dev/null", "-o", options.joined(separator: ","),
      "root@127.0.0.1:\(remotePath)", "{mountpoint}",
    ]
  }
}

/// A port on 127.0.0.1 that nothing listens on: bound by the kernel's choice, then released.
func refusedPort() -> UInt16 {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
  defer { close(fd) }
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  var length = socklen_t(MemoryLayout<sockaddr_in>.size)
  _ = withUnsafeMutablePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
    }
  }
  return UInt16(bigEndian: address.sin_port)
}

// MARK: Scenarios shared by every program

/// What the program serves and how the test reads it.
struct Served {
  var mountpoint: String
  /// Relative to the mountpoint.
  var file: String
  var content: String
  /// How the test reads a file: root reads directly; a mount without `allow_other` of another
  /// user only lets that user in.
  var read: (String) -> String? = readFile
  /// Whether the test itself may reach the daemon (hold a directory open in the old mount).
  var reachableByTest = true

  var isServing: Bool { read(mountpoint + "/" + file) == content }
}

/// READY only with the program's mount in the table and a file served; then SIGKILL of the
/// program: its dead mount (ENOTCONN for whoever still holds it open) is detached, the program
/// restarted, and the path serves again; READY stays the single one.
/// - Parameter reconnect: runs right after the kill (sshfs: accept the next connection).
func expectReadyThenRecoveryFromSIGKILL(
  daemon: Daemon, notify: NotifyReceiver, _ served: Served, reconnect: () throws -> Void = {}
) throws {
  let mountpoint = served.mountpoint
  let ready = try #require(
    notify.wait { $0.contains("READY=1") }, "no READY=1; log:\n\(daemon.log)")
  #expect(
    ready.fuseMountpoints.contains(mountpoint), "READY came before the mount was in mountinfo")
  #expect(served.isServing, "nothing served at READY; log:\n\(daemon.log)")

  let workers = daemon.workerPIDs(matching: mountpoint)
  try #require(workers.count == 1, "workers: \(workers); log:\n\(daemon.log)")
  let held = served.reachableByTest ? open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1
  defer { if held >= 0 { close(held) } }

  kill(workers[0], SIGKILL)
  try reconnect()
  let servesAgain = eventually {
    let now = daemon.workerPIDs(matching: mountpoint)
    // Not the mount id: the kernel hands a freed one out again.
    guard now.count == 1, now != workers, fuseMount(at: mountpoint) != nil else { return false }
    return served.isServing
  }
  #expect(
    servesAgain,
    "the mount does not serve again (workers \(daemon.workerPIDs(matching: mountpoint))); log:\n\(daemon.log)"
  )
  #expect(daemon.log.contains("killed by signal 9 (SIGKILL)"))
  #expect(daemon.log.contains("detached the worker's FUSE mount at \(mountpoint)"))
  #expect(
    mountTable().filter { $0.mountpoint == mountpoint }.count == 1,
    "the dead mount is still stacked there")
  if held >= 0 {
    var fs = statfs()
    let answer = fstatfs(held, &fs)
    let code = errno
    #expect(answer == -1 && code == ENOTCONN, "the old mount was not a dead one")
  }
  notify.drain()
  #expect(notify.count("READY=1") == 1)
}

/// One required mount that cannot start, with `restart = "never"`: the daemon exits 1 without
/// READY, its STATUS names the program's own words, the log has all of `logWords`, and nothing is
/// left mounted or running.
func expectStartFailure(
  sandbox: Sandbox, name: String, mountpoint: String, command: [String], settings: [String: String],
  statusWords: String, logWords: [String] = []
) throws {
  let notify = try NotifyReceiver(in: sandbox)
  let config = try sandbox.writeConfig(
    mountSection(
      name, at: mountpoint, command: command, settings.merging(["restart": "\"never\""]) { $1 }))
  let daemon = try Daemon(config: config, sandbox: sandbox, notify: notify)
  defer { daemon.stop() }
  #expect(daemon.exitCode() == 1, "log:\n\(daemon.log)")
  notify.drain()
  #expect(notify.count("READY=1") == 0)
  let status = notify.messages.last { $0.text.contains("STATUS=failed: \(name):") }?.text ?? ""
  #expect(status.contains(statusWords), "STATUS: \(status); log:\n\(daemon.log)")
  for words in [statusWords] + logWords {
    #expect(daemon.log.contains(words), "log:\n\(daemon.log)")
  }
  #expect(fuseMount(at: mountpoint) == nil, "a mount was left behind")
  #expect(eventually { processes(mentioning: mountpoint).isEmpty }, "a process was left behind")
}
