import Glibc

/// The bytes of `StateCoder`'s form, read by offset: tags, lengths, keys and primitive values,
/// every access within bounds.
extension StateCoder {
  final class Reader {
    let bytes: [UInt8]

    init(bytes: [UInt8]) { self.bytes = bytes }

    func tag(at offset: Int, _ path: [any CodingKey]) throws -> Tag {
      guard offset >= 0, offset < bytes.count, let tag = Tag(rawValue: bytes[offset]) else {
        throw StateCoder.corrupted(path, "no value at byte \(offset)")
      }
      return tag
    }

    /// 0 past the end: a damaged state then fails on a tag, never reads out of bounds.
    func word32(at offset: Int) -> UInt32 {
      guard offset >= 0, offset + 4 <= bytes.count else { return 0 }
      return UInt32(
        littleEndian: bytes.withUnsafeBytes {
          $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
        })
    }

    func word64(at offset: Int) -> UInt64 {
      guard offset >= 0, offset + 8 <= bytes.count else { return 0 }
      return UInt64(
        littleEndian: bytes.withUnsafeBytes {
          $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        })
    }

    /// The end of the value at `offset`, every part of it checked to lie within the bytes.
    func validate(at offset: Int) throws -> Int {
      func within(_ end: Int) throws -> Int {
        guard end <= bytes.count else { throw StateCoder.corrupted([], "the state is cut short") }
        return end
      }
      switch try tag(at: offset, []) {
      case .null, .no, .yes: return offset + 1
      case .int, .uint, .double: return try within(offset + 9)
      case .duration: return try within(offset + 17)
      case .string:
        _ = try within(offset + 5)
        return try within(offset + 5 + Int(word32(at: offset + 1)))
      case .keyed, .unkeyed:
        let tag = try tag(at: offset, [])
        let header = try within(offset + 9)
        let end = try within(header + Int(word32(at: offset + 5)))
        var position = header
        for _ in 0..<word32(at: offset + 1) {
          if tag == .keyed {
            position = try within(try within(position + 4) + Int(word32(at: position)))
          }
          position = try validate(at: position)
        }
        guard position == end else {
          throw StateCoder.corrupted([], "a container's length is wrong")
        }
        return end
      }
    }

    /// The end of the value at `offset`: a step, whatever its size.
    func skip(at offset: Int, _ path: [any CodingKey]) throws -> Int {
      switch try tag(at: offset, path) {
      case .null, .no, .yes: return offset + 1
      case .int, .uint, .double: return offset + 9
      case .duration: return offset + 17
      case .string: return offset + 5 + Int(word32(at: offset + 1))
      case .keyed, .unkeyed: return offset + 9 + Int(word32(at: offset + 5))
      }
    }

    /// Whether the key stored at `offset` (length, then UTF-8) is `key`.
    func keyMatches(at offset: Int, _ key: String) -> Bool {
      let length = Int(word32(at: offset))
      guard offset + 4 + length <= bytes.count else { return false }
      var key = key
      return key.withUTF8 { utf8 in
        guard utf8.count == length, let base = utf8.baseAddress else { return utf8.count == length }
        return bytes.withUnsafeBytes { memcmp($0.baseAddress! + offset + 4, base, length) == 0 }
      }
    }

    func text(at offset: Int) -> String {
      let start = min(offset + 4, bytes.count)
      let end = min(start + Int(word32(at: offset)), bytes.count)
      return String(decoding: bytes[start..<end], as: UTF8.self)
    }

    func string(at offset: Int, _ path: [any CodingKey]) throws -> String {
      guard try tag(at: offset, path) == .string else { throw mismatch(String.self, path) }
      return text(at: offset + 1)
    }

    func bool(at offset: Int, _ path: [any CodingKey]) throws -> Bool {
      switch try tag(at: offset, path) {
      case .yes: return true
      case .no: return false
      default: throw mismatch(Bool.self, path)
      }
    }

    func integer<T: FixedWidthInteger>(_ type: T.Type, at offset: Int, _ path: [any CodingKey])
      throws -> T
    {
      let value: T?
      switch try tag(at: offset, path) {
      case .int: value = T(exactly: Int64(bitPattern: word64(at: offset + 1)))
      case .uint: value = T(exactly: word64(at: offset + 1))
      default: throw mismatch(type, path)
      }
      guard let value else { throw StateCoder.corrupted(path, "\(type) out of range") }
      return value
    }

    func double(at offset: Int, _ path: [any CodingKey]) throws -> Double {
      guard try tag(at: offset, path) == .double else { throw mismatch(Double.self, path) }
      return Double(bitPattern: word64(at: offset + 1))
    }

    func value<T: Decodable>(_ type: T.Type, at offset: Int, _ path: [any CodingKey]) throws -> T {
      if T.self == String.self { return try string(at: offset, path) as! T }
      if T.self == Int.self { return try integer(Int.self, at: offset, path) as! T }
      if T.self == Int64.self { return try integer(Int64.self, at: offset, path) as! T }
      if T.self == Int32.self { return try integer(Int32.self, at: offset, path) as! T }
      if T.self == UInt64.self { return try integer(UInt64.self, at: offset, path) as! T }
      if T.self == UInt32.self { return try integer(UInt32.self, at: offset, path) as! T }
      if T.self == Bool.self { return try bool(at: offset, path) as! T }
      if T.self == Double.self { return try double(at: offset, path) as! T }
      // Format 1 wrote a Duration as its own Codable form (a container), which `T(from:)` reads.
      if T.self == Duration.self, try tag(at: offset, path) == .duration {
        return Duration(
          secondsComponent: Int64(bitPattern: word64(at: offset + 1)),
          attosecondsComponent: Int64(bitPattern: word64(at: offset + 9))) as! T
      }
      return try T(from: StateDecoder(reader: self, offset: offset, codingPath: path))
    }

    private func mismatch(_ type: Any.Type, _ path: [any CodingKey]) -> DecodingError {
      DecodingError.typeMismatch(
        type, .init(codingPath: path, debugDescription: "another kind of value"))
    }
  }
}
