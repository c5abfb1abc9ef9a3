// Package dashboard is edged's live status page: one HTML page, its script
// and style embedded in the binary, that shows sites and routes (request
// rate, 5xx rate and latency percentiles with sparklines the page draws),
// upstream servers, certificates, caches, limit zones, connections, the
// configuration's generation and last reload, and the workers of every
// appd edged can reach through its control socket.
//
// The page updates itself from a JSON snapshot (status.json) sent once a
// second as server-sent events (events); it works from any path prefix,
// so edged serves it on the admin socket (/dashboard/), on a route with
// status_page = true behind allow/deny or authentication, and through
// `edged dashboard`, which serves it on a loopback port for an SSH tunnel
// and takes the snapshots from the admin socket.
//
// Nothing secret reaches the snapshot: it is built from running state,
// never from the configuration's secrets (ask URLs, TSIG keys, admin
// tokens, password hashes), and its free text (errors, reasons) is
// scrubbed of URL credentials and queries, bearer tokens and password
// hashes before it leaves (redact.go).
//
// Each route's recent traffic is a RouteHistory: a ring of per-second
// buckets that the request path updates with atomic adds, holding no
// lock and allocating nothing.
package dashboard
