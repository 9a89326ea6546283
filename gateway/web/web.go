// Package web holds the dashboard's static files (one page, its script and its style sheet),
// embedded in the binary: no build step, no CDN, nothing fetched from elsewhere.
package web

import "embed"

// FS holds index.html, app.js and style.css.
//
//go:embed index.html app.js style.css
var FS embed.FS
