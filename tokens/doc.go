// Package tokens holds Augur's one tokenisation rule, shared by the picker (which estimates
// prompt sizes and prefix blocks) and the simulator (which bills, caches and generates tokens).
//
// The rule: a text of n bytes is ceil(n/4) tokens; a prompt given as token ids is one token per
// id. A chat prompt is first rendered into a single text by RenderChat, so both sides count and
// hash the same bytes; ContentText reduces an OpenAI message's content (a string or a list of
// parts) to the text rendered, for both. Real tokenizers differ per model; what matters for
// routing is that the estimate is cheap, deterministic and identical on both sides.
//
// It depends on the standard library only.
//
// Allowed imports (checked by imports_test.go): none.
package tokens
