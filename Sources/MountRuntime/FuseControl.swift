import CLinuxSupport
import Glibc

/// The kernel's FUSE control file system (fusectl): one directory per connection, named by the
/// minor of the mount's device, with `waiting` (requests the server has not answered) and
/// `abort` (writing to it fails every request at once, ECONNABORTED, and later ones ENOTCONN).
enum FuseControl {
  static let directory = "/sys/fs/fuse/connections"
  /// `FUSE_CTL_SUPER_MAGIC`.
  static let magic = 0x6573_5543

  /// Mounts fusectl where it belongs unless it is there (Debian does not mount it); nil when it
  /// is usable, else why not.
  static func ensureMounted() -> String? {
    var fs = statfs()
    if statfs(directory, &fs) == 0, fs.f_type == magic { return nil }
    guard statfs(directory, &fs) == 0 else {
      return "\(directory): \(errorText(errno)) (is the fuse module loaded?)"
    }
    guard mount("fusectl", directory, "fusectl", 0, nil) == 0 else {
      return "cannot mount fusectl at \(directory): \(errorText(errno))"
    }
    return nil
  }

  /// Requests of the connection its server has not answered yet; nil when the connection is
  /// gone or fusectl cannot be read.
  static func waiting(connection: UInt32) -> Int? {
    let fd = open("\(directory)/\(connection)/waiting", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 32)
    let count = read(fd, &buffer, buffer.count)
    guard count > 0 else { return nil }
    return Int(String(decoding: buffer[..<count], as: UTF8.self).filter(\.isNumber))
  }

  /// Aborts the connection; nil once done, else why not.
  static func abort(connection: UInt32) -> String? {
    let path = "\(directory)/\(connection)/abort"
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return "cannot open \(path): \(errorText(errno))" }
    defer { close(fd) }
    guard write(fd, "1", 1) == 1 else { return "cannot write \(path): \(errorText(errno))" }
    return nil
  }
}
