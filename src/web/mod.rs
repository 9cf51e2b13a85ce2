//! The web page and JSON API of active connections (tiny_http).
