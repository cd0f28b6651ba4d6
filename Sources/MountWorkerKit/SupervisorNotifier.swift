import Glibc

/// The worker side of the MountSupervisor readiness protocol.
///
/// The supervisor hands each worker one end of a `SOCK_SEQPACKET` socketpair and names it in
/// `MOUNTSUP_NOTIFY_FD`. Each message is one datagram of newline-separated `KEY=VALUE` lines
/// (sd_notify syntax): `READY=1` once the kernel mount is initialised, `STATUS=text` at any
/// time, `ERROR=text` and `ERRNO=n` before exiting on failure, `STOPPING=1` when shutting down.
/// Without the variable (a worker started by hand) every method does nothing, so a worker
/// calls them unconditionally.
///
/// ``FUSEWorker`` sends READY, ERROR/ERRNO and STOPPING itself; filesystems use ``status(_:)``
/// and, for failures before the worker runs, ``FUSEWorker/exit(failure:errno:)``.
public struct SupervisorNotifier: Sendable {
  /// The environment variable that carries the descriptor number.
  public static let environmentVariable = "MOUNTSUP_NOTIFY_FD"

  /// The channel named by `MOUNTSUP_NOTIFY_FD`, resolved once per process (first used by the
  /// main thread in practice). The variable is then removed from the environment: a program the
  /// worker starts does not inherit the descriptor, and must not take whatever it finds at
  /// that number for the channel.
  public static let shared: SupervisorNotifier = {
    let notifier = SupervisorNotifier(environment: getenv(environmentVariable))
    unsetenv(environmentVariable)
    return notifier
  }()

  /// The socket descriptor, or `nil` when the worker runs standalone.
  public let descriptor: Int32?

  /// A channel over an explicit descriptor, or a silent one for `nil`. The descriptor is marked
  /// close-on-exec so that programs the worker starts cannot hold the channel open.
  public init(descriptor: Int32?) {
    if let descriptor, fcntl(descriptor, F_GETFD) >= 0 {
      _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
      self.descriptor = descriptor
    } else {
      self.descriptor = nil
    }
  }

  init(environment value: UnsafeMutablePointer<CChar>?) {
    guard let value, let number = Int32(String(cString: value)), number >= 0 else {
      self.init(descriptor: nil)
      return
    }
    self.init(descriptor: number)
  }

  /// Whether a supervisor is listening.
  public var isActive: Bool { descriptor != nil }

  /// The kernel mount is initialised and serving.
  public func ready() { send(["READY": "1"]) }

  /// A one-line human-readable state, shown by the supervisor.
  public func status(_ text: String) { send(["STATUS": text]) }

  /// The worker is about to exit because of `text`; `errno` is the underlying error, if any.
  public func failure(_ text: String, errno: Int32?) {
    var fields: KeyValuePairs<String, String> = ["ERROR": text]
    if let errno { fields = ["ERROR": text, "ERRNO": String(errno)] }
    send(fields)
  }

  /// The worker is shutting down in an orderly way.
  public func stopping() { send(["STOPPING": "1"]) }

  /// Sends one datagram with the given fields. Newlines inside values become spaces, since a
  /// newline separates fields. Delivery failures are ignored: the supervisor may be gone.
  public func send(_ fields: KeyValuePairs<String, String>) {
    guard let descriptor else { return }
    var message = SupervisorNotifier.encode(fields)
    _ = message.withUTF8 { bytes in
      Glibc.send(descriptor, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
    }
  }

  static func encode(_ fields: KeyValuePairs<String, String>) -> String {
    fields.map { key, value in
      key + "=" + String(value.map { $0.isNewline ? " " : $0 })
    }.joined(separator: "\n")
  }
}
