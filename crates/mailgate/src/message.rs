//! Building and checking messages.
