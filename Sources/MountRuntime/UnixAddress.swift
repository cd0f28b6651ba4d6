import Glibc

/// A `sockaddr_un`, filled in one place: a path, or a name in the abstract namespace.
struct UnixAddress {
  private(set) var storage = sockaddr_un()
  /// The length to pass to bind/connect: family plus the bytes of the path or name.
  let length: socklen_t

  /// The longest path or abstract name `sun_path` holds (107 bytes on Linux).
  static let capacity = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

  /// A filesystem path; nil when it does not fit.
  init?(path: String) {
    let bytes = Array(path.utf8)
    guard bytes.count <= Self.capacity else { return nil }
    storage.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &storage.sun_path) { raw in
      raw.copyBytes(from: bytes)
      raw[bytes.count] = 0
    }
    length = socklen_t(MemoryLayout<sockaddr_un>.size)
  }

  /// A name in the abstract namespace (no file; gone with the socket); nil when it does not fit.
  init?(abstract name: String) {
    let bytes = Array(name.utf8)
    guard bytes.count <= Self.capacity else { return nil }
    storage.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &storage.sun_path) { raw in
      raw[0] = 0
      for (index, byte) in bytes.enumerated() { raw[index + 1] = byte }
    }
    length = socklen_t(MemoryLayout<sa_family_t>.size + 1 + bytes.count)
  }

  func withSocketAddress<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
    withUnsafePointer(to: storage) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
    }
  }
}
