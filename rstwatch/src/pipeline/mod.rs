//! From the kernel's ring-buffer records to written records.

#[cfg(test)]
mod golden;
