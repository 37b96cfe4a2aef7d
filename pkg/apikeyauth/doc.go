// Package apikeyauth lets an in-cluster Go service accept apikey-operator
// API keys. A Client asks the auth server's POST /verify whether a token is
// valid and who it is, caches the answer briefly, and offers an HTTP
// middleware that puts the caller's Identity in the request context.
//
// The identity comes only from the auth server's answer. Nothing in an
// incoming request other than the token itself is read, so a client cannot
// claim a user, group or scope by sending headers.
//
// Tokens are secrets: this package never logs a token, never puts one in an
// error, and keeps only their SHA-256 digests in its cache.
package apikeyauth
