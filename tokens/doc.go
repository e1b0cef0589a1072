// Package tokens holds Augur's one tokenisation rule, shared by the picker (which estimates
// prompt sizes and prefix blocks) and the simulator (which bills, caches and generates tokens).
//
// The rule: a text of n bytes is ceil(n/4) tokens; a prompt given as token ids is one token per
// id. A chat prompt is first rendered into a single text by RenderChat, so both sides count and
// hash the same bytes; ContentText reduces an OpenAI message's content (a string or a list of
// parts) to the text rendered, for both. Real tokenizers differ per model; what matters for
// routing is that the estimate is cheap, deterministic and identical on both sides.
//
// The echo rule (EchoText, EchoPieces) is the text the simulator generates for n tokens: its
// source cut into 4-byte tokens and repeated. It lives here, beside the rule it is made of,
// because the workloads must predict that text exactly (a conversation resends it as history)
// without depending on the simulator.
//
// It depends on the standard library only.
//
// Allowed imports (checked by imports_test.go): none.
package tokens
