import CMountWorkerKitSupport
import Glibc
import MountWorkerKit

// The filesystem's statistics, access checks and extended attributes, each the same call on
// SOURCE's file.
extension MirrorFileSystem {
  func statfs(_ request: FUSERequest, inode: FUSEInode) throws(FUSEError) -> statvfs {
    var statistics = statvfs()
    guard fstatvfs(try nodes.node(inode).descriptor, &statistics) == 0 else { throw .current }
    return statistics
  }

  func access(_ request: FUSERequest, inode: FUSEInode, mask: Int32) throws(FUSEError) {
    guard faccessat(try nodes.node(inode).descriptor, "", mask, MWK_AT_EMPTY_PATH) == 0 else {
      throw .current
    }
  }

  func setxattr(
    _ request: FUSERequest, inode: FUSEInode, name: FUSEName, value: UnsafeRawBufferPointer,
    flags: Int32
  ) throws(FUSEError) {
    let result = try withProcPath(nodes.node(inode).descriptor) {
      CMountWorkerKitSupport.setxattr($0, name.cString, value.baseAddress, value.count, flags)
    }
    guard result == 0 else { throw .current }
  }

  func getxattr(
    _ request: FUSERequest, inode: FUSEInode, name: FUSEName,
    into buffer: UnsafeMutableRawBufferPointer
  ) throws(FUSEError) -> Int {
    let length = try withProcPath(nodes.node(inode).descriptor) {
      CMountWorkerKitSupport.getxattr($0, name.cString, buffer.baseAddress, buffer.count)
    }
    guard length >= 0 else { throw .current }
    return length
  }

  func listxattr(
    _ request: FUSERequest, inode: FUSEInode, into buffer: UnsafeMutableRawBufferPointer
  ) throws(FUSEError) -> Int {
    let length = try withProcPath(nodes.node(inode).descriptor) {
      CMountWorkerKitSupport.listxattr(
        $0, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), buffer.count)
    }
    guard length >= 0 else { throw .current }
    return length
  }

  func removexattr(_ request: FUSERequest, inode: FUSEInode, name: FUSEName) throws(FUSEError) {
    let result = try withProcPath(nodes.node(inode).descriptor) {
      CMountWorkerKitSupport.removexattr($0, name.cString)
    }
    guard result == 0 else { throw .current }
  }
}
