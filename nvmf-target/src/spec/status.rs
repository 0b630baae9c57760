//! Status code types (SCT) and status codes (SC) the target returns.
//! Filled out by the spec module work; transports and the core use these names only.

/// Status code type: generic command status.
pub const SCT_GENERIC: u8 = 0x0;
/// Status code type: command specific status.
pub const SCT_COMMAND_SPECIFIC: u8 = 0x1;
/// Status code type: media and data integrity errors.
pub const SCT_MEDIA: u8 = 0x2;
/// Status code type: path related status.
pub const SCT_PATH: u8 = 0x3;
