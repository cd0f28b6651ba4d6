import Glibc

/// A compact binary form of `Codable` values, for the state an upgrade hands over: the state of
/// 1,000 mounts must cross an exec in milliseconds, and JSON took 80 ms each way.
///
/// Every value is a tag byte and its payload: nil, false, true, an 8-byte integer (signed or
/// not), an 8-byte double, a string (length and UTF-8), a `Duration` (seconds and attoseconds,
/// 8 bytes each: a mount has a dozen, and a container each cost a third of the encoding), a keyed
/// container (count, byte length, then key and value per entry) or an unkeyed one (count, byte
/// length, values). Keyed
/// containers keep every key, nil included, in the order written; a decoder that asks for keys in
/// the same order (as synthesized `Codable` does) finds each at once, any other order by a scan.
/// Lengths let a reader step over any value without reading it.
enum StateCoder {
  enum Tag: UInt8 {
    case null = 0, no, yes, int, uint, double, string, keyed, unkeyed, duration
  }

  static func encode(_ value: some Encodable) throws -> [UInt8] {
    let writer = Writer()
    try value.encode(to: StateEncoder(writer: writer))
    _ = try writer.fixLengths(at: 0)
    return writer.bytes
  }

  /// Checks the whole form first (every length within bounds, nothing left over), so that a
  /// damaged state is an error, not a value made of parts.
  static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
    let reader = Reader(bytes: bytes)
    guard try reader.validate(at: 0) == bytes.count else {
      throw corrupted([], "bytes left over after the value")
    }
    return try T(from: StateDecoder(reader: reader, offset: 0, codingPath: []))
  }

  static func corrupted(_ path: [any CodingKey], _ what: String) -> DecodingError {
    DecodingError.dataCorrupted(.init(codingPath: path, debugDescription: what))
  }
}
