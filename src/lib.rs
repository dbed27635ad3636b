//! gatehouse
