/// Runs `body` with `/proc/self/fd/<descriptor>`, built on the stack.
///
/// Syscalls without an fd-relative form (open for I/O, truncate, chmod, xattrs) reach the file
/// behind an `O_PATH` descriptor through this magic link. It names the file itself, never a
/// symlink's target, even when the syscall follows links.
@inline(__always)
func withProcPath<Result>(_ descriptor: Int32, _ body: (UnsafePointer<CChar>) -> Result) -> Result {
  withUnsafeTemporaryAllocation(of: CChar.self, capacity: 32) { buffer in
    var index = 0
    for byte in "/proc/self/fd/".utf8 {
      buffer[index] = CChar(bitPattern: byte)
      index += 1
    }
    var digits = 1
    var rest = descriptor / 10
    while rest > 0 {
      digits += 1
      rest /= 10
    }
    var value = descriptor
    for position in stride(from: index + digits - 1, through: index, by: -1) {
      buffer[position] = CChar(0x30 + value % 10)
      value /= 10
    }
    buffer[index + digits] = 0
    return body(buffer.baseAddress!)
  }
}
