// Renders an Ollama Modelfile TEMPLATE with Go's text/template on the data Ollama
// gives a template that ranges over .Messages, so tests can compare it with the
// model's own Jinja template. Our own code, following Ollama's source (commit
// fb307609, github.com/ollama/ollama):
//   - template/template.go Parse: Option("missingkey=zero") and the FuncMap names
//     json, currentDate, yesterdayDate, toTypeScriptType (stand-ins here: the
//     tested templates call none of them);
//   - template/template.go Execute and collate: System is every system message's
//     content joined by "\n\n", and those messages stay in Messages; consecutive
//     messages of one role (tool excepted) are merged with "\n\n";
//   - templateMessage: Role, Content, Thinking, ToolCalls, ToolName, ToolCallID;
//   - templateToolCall / templateToolCallFunction: ID; Index, Name, Arguments, where
//     Arguments is templateArgs, a map whose String() is json.Marshal (keys sorted,
//     compact, HTML characters escaped);
//   - templateTool / templateToolFunction / templateToolFunctionParameters: Type;
//     Name, Description, Parameters {Type, Required, Properties};
//   - the map passed: System, Messages, Tools, Response "", Think, ThinkLevel, IsThinkSet.
//
// stdin: {"template": "...", "messages": [{"role", "content", "thinking", "tool_calls":
// [{"id", "function": {"index", "name", "arguments": {...}}}], "tool_name", "tool_call_id"}],
// "tools": [{"type", "function": {"name", "description", "parameters"}}], "think": bool,
// "is_think_set": bool}; stdout: the rendered prompt.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
	"time"
)

type templateArgs map[string]any

func (t templateArgs) String() string {
	if t == nil {
		return "{}"
	}
	bts, _ := json.Marshal(t)
	return string(bts)
}

type toolCallFunction struct {
	Index     int          `json:"index"`
	Name      string       `json:"name"`
	Arguments templateArgs `json:"arguments"`
}

type toolCall struct {
	ID       string           `json:"id"`
	Function toolCallFunction `json:"function"`
}

type toolParameters struct {
	Type       string         `json:"type"`
	Required   []string       `json:"required,omitempty"`
	Properties map[string]any `json:"properties"`
}

type toolFunction struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Parameters  toolParameters `json:"parameters"`
}

type tool struct {
	Type     string       `json:"type"`
	Function toolFunction `json:"function"`
}

type message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	Thinking   string     `json:"thinking"`
	ToolCalls  []toolCall `json:"tool_calls"`
	ToolName   string     `json:"tool_name"`
	ToolCallID string     `json:"tool_call_id"`
}

type request struct {
	Template   string    `json:"template"`
	Messages   []message `json:"messages"`
	Tools      []tool    `json:"tools"`
	Think      bool      `json:"think"`
	IsThinkSet bool      `json:"is_think_set"`
}

func collate(msgs []message) (string, []*message) {
	var system []string
	var out []*message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if n := len(out); n > 0 && out[n-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			out[n-1].Content += "\n\n" + msgs[i].Content
		} else {
			out = append(out, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), out
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "bad request:", err)
		os.Exit(2)
	}
	funcs := template.FuncMap{
		"json":             func(v any) string { b, _ := json.Marshal(v); return string(b) },
		"currentDate":      func(args ...string) string { return time.Now().Format("2006-01-02") },
		"yesterdayDate":    func(args ...string) string { return time.Now().AddDate(0, 0, -1).Format("2006-01-02") },
		"toTypeScriptType": func(v any) string { return "any" },
	}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(req.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, "parse:", err)
		os.Exit(3)
	}
	system, msgs := collate(req.Messages)
	var tools []tool // nil when none are offered, as convertToolsForTemplate returns
	if len(req.Tools) > 0 {
		tools = req.Tools
	}
	data := map[string]any{"System": system, "Messages": msgs, "Tools": tools, "Response": "",
		"Think": req.Think, "ThinkLevel": "", "IsThinkSet": req.IsThinkSet}
	if err := tmpl.Execute(os.Stdout, data); err != nil {
		fmt.Fprintln(os.Stderr, "execute:", err)
		os.Exit(4)
	}
}
