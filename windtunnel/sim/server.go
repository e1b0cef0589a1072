package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/augur-llm/augur/tokens"
)

// HeaderReplica names the response header that carries the serving replica's name.
const HeaderReplica = "x-sim-replica"

// maxBodyBytes bounds a request body; far above any prompt the profiles accept.
const maxBodyBytes = 32 << 20

// ServerOptions configures a replica's HTTP front end.
type ServerOptions struct {
	// Name identifies the replica in the x-sim-replica header and in logs.
	Name string
	// StreamInterval is how many tokens one SSE chunk carries, like vLLM's --stream-interval:
	// the first token goes out at once, then chunks of StreamInterval tokens, and the last
	// chunk whatever remains. 0 means 1.
	StreamInterval int
	// TokenText is the text generated: TokenTextEcho (the zero value) follows the echo rule,
	// TokenTextNatural gives tokens of natural lengths. Either way there are max_tokens tokens,
	// one per SSE chunk at StreamInterval 1, and usage reports them.
	TokenText TokenText
	// Logger receives request logs; nil discards them.
	Logger *slog.Logger
}

// Server is a replica's OpenAI-compatible HTTP API, in front of one Engine.
type Server struct {
	e        *Engine
	opts     ServerOptions
	model    string
	log      *slog.Logger
	registry *prometheus.Registry
	mux      *http.ServeMux
}

// NewServer builds the HTTP API for e. It registers e's metrics in a registry of its own.
func NewServer(e *Engine, opts ServerOptions) (*Server, error) {
	if opts.StreamInterval == 0 {
		opts.StreamInterval = 1
	}
	if opts.StreamInterval < 0 {
		return nil, fmt.Errorf("sim: negative stream interval %d", opts.StreamInterval)
	}
	if _, err := opts.TokenText.MarshalText(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		e:        e,
		opts:     opts,
		model:    e.Config().Model,
		log:      log.With("replica", opts.Name),
		registry: prometheus.NewRegistry(),
		mux:      http.NewServeMux(),
	}
	if err := s.registry.Register(e.Collector()); err != nil {
		return nil, fmt.Errorf("sim: registering metrics: %w", err)
	}
	s.mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) { s.generate(w, r, true) })
	s.mux.HandleFunc("POST /v1/completions", func(w http.ResponseWriter, r *http.Request) { s.generate(w, r, false) })
	s.mux.HandleFunc("GET /v1/models", s.models)
	s.mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "route "+r.Method+" "+r.URL.Path+" not found")
	})
	return s, nil
}

// Registry is the replica's metric registry.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(HeaderReplica, s.opts.Name)
	s.mux.ServeHTTP(w, r)
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	type model struct {
		ID          string `json:"id"`
		Object      string `json:"object"`
		Created     int64  `json:"created"`
		OwnedBy     string `json:"owned_by"`
		Root        string `json:"root"`
		Parent      *int   `json:"parent"`
		MaxModelLen int    `json:"max_model_len"`
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list",
		"data": []model{{
			ID: s.model, Object: "model", Created: s.e.Clock().Now().Unix(), OwnedBy: "vllm",
			Root: s.model, MaxModelLen: s.e.Config().Profile.MaxModelLen,
		}},
	})
}

// errorBody is the OpenAI error shape.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    int     `json:"code"`
	} `json:"error"`
}

func errorJSON(status int, msg string) errorBody {
	var b errorBody
	b.Error.Message = msg
	b.Error.Code = status
	switch status {
	case http.StatusBadRequest:
		b.Error.Type = "BadRequestError"
	case http.StatusNotFound:
		b.Error.Type = "NotFoundError"
	case http.StatusRequestEntityTooLarge:
		b.Error.Type = "RequestTooLargeError"
	case http.StatusServiceUnavailable:
		b.Error.Type = "ServiceUnavailableError"
	default:
		b.Error.Type = "InternalServerError"
	}
	return b
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorJSON(status, msg))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// generation is one parsed request on its way through the engine.
type generation struct {
	chat         bool
	id           string
	created      int64
	includeUsage bool
	inputs       []promptInput
	handles      []*Handle
}

func (s *Server) generate(w http.ResponseWriter, r *http.Request, chat bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", tooBig.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	var req apiRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return
	}
	g, maxTokens, err := s.parse(&req, chat)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Model != s.model {
		writeError(w, http.StatusNotFound, fmt.Sprintf("The model `%s` does not exist.", req.Model))
		return
	}
	g.id = requestID(r, chat)
	g.created = s.e.Clock().Now().Unix()

	// Every prompt of the request shares the request's context: one vanished client drops
	// them all.
	ctx := r.Context()
	for _, in := range g.inputs {
		h, err := s.e.Submit(ctx, Request{Prompt: in.prompt, MaxTokens: maxTokens})
		if err != nil {
			switch {
			case errors.Is(err, ErrTooLong):
				writeError(w, http.StatusBadRequest, err.Error())
			case errors.Is(err, ErrStopped):
				writeError(w, http.StatusServiceUnavailable, err.Error())
			default:
				writeError(w, http.StatusInternalServerError, err.Error())
			}
			return
		}
		g.handles = append(g.handles, h)
	}
	s.log.Debug("request", "id", g.id, "chat", chat, "prompts", len(g.inputs),
		"prompt_tokens", g.inputs[0].prompt.Tokens(), "max_tokens", maxTokens, "stream", req.Stream)
	if req.Stream {
		s.stream(ctx, w, g)
		return
	}
	s.respond(ctx, w, g)
}

func (s *Server) parse(req *apiRequest, chat bool) (*generation, int, error) {
	if err := req.validateCommon(); err != nil {
		return nil, 0, err
	}
	maxTokens, err := req.maxTokens()
	if err != nil {
		return nil, 0, err
	}
	g := &generation{chat: chat, includeUsage: req.Stream && req.StreamOptions != nil && req.StreamOptions.IncludeUsage}
	if chat {
		in, err := req.chatInput()
		if err != nil {
			return nil, 0, err
		}
		g.inputs = []promptInput{in}
	} else {
		if g.inputs, err = req.completionInputs(); err != nil {
			return nil, 0, err
		}
	}
	return g, maxTokens, nil
}

// requestID follows vLLM: the caller's x-request-id when given, a random one otherwise.
func requestID(r *http.Request, chat bool) string {
	base := r.Header.Get("x-request-id")
	if base == "" {
		base = strings.ReplaceAll(uuid.NewString(), "-", "")
	}
	if chat {
		return "chatcmpl-" + base
	}
	return "cmpl-" + base
}

// changes merges the handles' change signals. One handle, the common case, needs no helper
// goroutines.
func changes(ctx context.Context, handles []*Handle) <-chan struct{} {
	if len(handles) == 1 {
		return handles[0].Changed()
	}
	merged := make(chan struct{}, 1)
	for _, h := range handles {
		go func() {
			for {
				select {
				case <-h.Changed():
					select {
					case merged <- struct{}{}:
					default:
					}
					if h.Progress().Done {
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	return merged
}

type usageJSON struct {
	PromptTokens        int `json:"prompt_tokens"`
	TotalTokens         int `json:"total_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

func usageOf(ps []Progress) usageJSON {
	var u usageJSON
	for _, p := range ps {
		u.PromptTokens += p.PromptTokens
		u.CompletionTokens += p.Generated
		u.PromptTokensDetails.CachedTokens += p.CachedTokens
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

func engineErrorStatus(err error) int {
	if errors.Is(err, ErrStopped) {
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// respond waits for every prompt to finish and writes one chat.completion or
// text_completion object.
func (s *Server) respond(ctx context.Context, w http.ResponseWriter, g *generation) {
	changed := changes(ctx, g.handles)
	ps := make([]Progress, len(g.handles))
	for {
		done := true
		for i, h := range g.handles {
			ps[i] = h.Progress()
			if ps[i].Err != nil {
				writeError(w, engineErrorStatus(ps[i].Err), ps[i].Err.Error())
				return
			}
			done = done && ps[i].Done
		}
		if done {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return // the client is gone; the engine drops the request on its own
		}
	}
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	type choice struct {
		Index        int      `json:"index"`
		Message      *message `json:"message,omitempty"`
		Text         *string  `json:"text,omitempty"`
		Logprobs     any      `json:"logprobs"` // always null
		FinishReason string   `json:"finish_reason"`
	}
	choices := make([]choice, len(ps))
	for i, p := range ps {
		var text string
		if s.opts.TokenText == TokenTextNatural {
			text = newNaturalTokens(g.inputs[i].echo, i).text(p.Generated)
		} else {
			text = tokens.EchoText(g.inputs[i].echo, p.Generated)
		}
		choices[i] = choice{Index: i, FinishReason: "length"}
		if g.chat {
			choices[i].Message = &message{Role: "assistant", Content: text}
		} else {
			choices[i].Text = &text
		}
	}
	object := "text_completion"
	if g.chat {
		object = "chat.completion"
	}
	writeJSON(w, http.StatusOK, struct {
		ID      string    `json:"id"`
		Object  string    `json:"object"`
		Created int64     `json:"created"`
		Model   string    `json:"model"`
		Choices []choice  `json:"choices"`
		Usage   usageJSON `json:"usage"`
	}{g.id, object, g.created, s.model, choices, usageOf(ps)})
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = appendEscaped(dst, s)
	return append(dst, '"')
}

// appendEscaped appends s escaped for the inside of a JSON string. s is valid UTF-8 here (it
// comes from a decoded JSON body), so only quotes, backslashes and control bytes need care.
func appendEscaped(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	return append(dst, s[start:]...)
}

// echoTokens is a request's echo pieces escaped for JSON once, in one buffer: token t of the
// output is text[off[t%n]:off[t%n+1]].
type echoTokens struct {
	text []byte
	off  []int
}

func newEchoTokens(source string) echoTokens {
	pieces := tokens.EchoPieces(source)
	et := echoTokens{text: make([]byte, 0, len(pieces)*4), off: make([]int, 1, len(pieces)+1)}
	for _, p := range pieces {
		et.text = appendEscaped(et.text, p)
		et.off = append(et.off, len(et.text))
	}
	return et
}

func (et *echoTokens) appendTokens(dst []byte, from, to int) []byte {
	n := len(et.off) - 1
	for t := from; t < to; t++ {
		i := t % n
		dst = append(dst, et.text[et.off[i]:et.off[i+1]]...)
	}
	return dst
}

// sse writes one streamed response. Chunks are assembled by hand into a reused buffer from
// pieces escaped once per request, because this path runs once per generated token and
// dominates the simulator's CPU cost under load.
type sse struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	buf     []byte
	head    []byte          // `data: {"id":...,"model":...,"choices":[`
	echo    []echoTokens    // per choice, for the echo rule
	natural []naturalTokens // per choice, for natural tokens (then echo is nil)
	chat    bool
	failed  bool
}

func (st *sse) send() {
	if st.failed {
		return
	}
	if _, err := st.w.Write(st.buf); err != nil {
		st.failed = true // the client is gone; the request context ends with it
	}
	_ = st.rc.Flush()
	st.buf = st.buf[:0]
}

func (st *sse) roleChunk(i int) {
	b := append(st.buf, st.head...)
	b = append(b, `{"index":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`+"\n\n"...)
	st.buf = b
	st.send()
}

func (st *sse) tokenChunk(i, from, to int, last bool) {
	b := append(st.buf, st.head...)
	b = append(b, `{"index":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	if st.chat {
		b = append(b, `,"delta":{"content":"`...)
	} else {
		b = append(b, `,"text":"`...)
	}
	if st.natural != nil {
		b = st.natural[i].appendTokens(b, from, to)
	} else {
		b = st.echo[i].appendTokens(b, from, to)
	}
	if st.chat {
		b = append(b, `"}`...)
	} else {
		b = append(b, '"')
	}
	if last {
		b = append(b, `,"logprobs":null,"finish_reason":"length"}]}`+"\n\n"...)
	} else {
		b = append(b, `,"logprobs":null,"finish_reason":null}]}`+"\n\n"...)
	}
	st.buf = b
	st.send()
}

func (st *sse) usageChunk(u usageJSON) {
	b := append(st.buf, st.head...)
	b = append(b, `],"usage":`...)
	ub, _ := json.Marshal(u)
	b = append(b, ub...)
	b = append(b, "}\n\n"...)
	st.buf = b
	st.send()
}

func (st *sse) errorChunk(status int, msg string) {
	eb, _ := json.Marshal(errorJSON(status, msg))
	st.buf = append(append(append(st.buf, "data: "...), eb...), "\n\n"...)
	st.send()
}

func (st *sse) done() {
	st.buf = append(st.buf, "data: [DONE]\n\n"...)
	st.send()
}

// stream writes the response as server-sent events, one chunk per token or per
// StreamInterval tokens, each flushed at once.
func (s *Server) stream(ctx context.Context, w http.ResponseWriter, g *generation) {
	st := &sse{w: w, rc: http.NewResponseController(w), chat: g.chat, buf: make([]byte, 0, 512)}
	object := "text_completion"
	if g.chat {
		object = "chat.completion.chunk"
	}
	h := append([]byte(`data: {"id":`), appendJSONString(nil, g.id)...)
	h = append(h, `,"object":"`+object+`","created":`...)
	h = strconv.AppendInt(h, g.created, 10)
	h = append(h, `,"model":`...)
	h = appendJSONString(h, s.model)
	st.head = append(h, `,"choices":[`...)
	for i, in := range g.inputs {
		if s.opts.TokenText == TokenTextNatural {
			st.natural = append(st.natural, newNaturalTokens(in.echo, i))
		} else {
			st.echo = append(st.echo, newEchoTokens(in.echo))
		}
	}

	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_ = st.rc.Flush() // headers now, as vLLM does, before the first token exists

	interval := s.opts.StreamInterval
	changed := changes(ctx, g.handles)
	sent := make([]int, len(g.handles))
	ps := make([]Progress, len(g.handles))
	for !st.failed {
		finished := true
		for i, h := range g.handles {
			p := h.Progress()
			ps[i] = p
			if p.Err != nil {
				st.errorChunk(engineErrorStatus(p.Err), p.Err.Error())
				st.done()
				return
			}
			for sent[i] < p.Generated {
				k := p.Generated - sent[i]
				switch {
				case sent[i] == 0:
					k = 1 // the first token is never held back
					if g.chat {
						st.roleChunk(i)
					}
				case k > interval:
					k = interval
				case k < interval && !p.Done:
					k = 0
				}
				if k == 0 {
					break
				}
				st.tokenChunk(i, sent[i], sent[i]+k, p.Done && sent[i]+k == p.Generated)
				sent[i] += k
			}
			finished = finished && p.Done && sent[i] == p.Generated
		}
		if finished {
			if g.includeUsage {
				st.usageChunk(usageOf(ps))
			}
			st.done()
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}
