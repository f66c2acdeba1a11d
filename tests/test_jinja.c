/* The Jinja engine against jinja2 3.1.6 as Transformers 5 configures it
 * (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
 * {% generation %}, raise_exception / strftime_now / namespace / dict, and
 * json.dumps as tojson). Every expected text in the tables below is what
 * jinja2 renders for that template and context; the golden test renders the
 * real templates of tests/data/jinja (tools/reference/make_jinja_golden.py). */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "tune/jinja.h"
#include "tune/util.h"

#define NOW 1721952000 /* 2024-07-26 00:00:00 UTC, as the golden file pins it */
#define N(a) ((int)(sizeof(a) / sizeof *(a)))

typedef struct render_case {
    const char *src, *ctx, *want; /* ctx: a JSON object, or NULL for none */
} render_case;

/* Parses and renders src; out receives the text. */
static tune_status render(const char *src, const char *ctx_json, const tune_jinja_limits *lim, tune_strbuf *out,
                          int *raised, tune_error *err)
{
    tune_jinja *t;
    tune_status st = tune_jinja_parse(src, strlen(src), "test.jinja", &t, err);
    if (st) return st;
    cJSON *ctx = ctx_json ? cJSON_Parse(ctx_json) : NULL;
    ck_assert_msg(!ctx_json || ctx, "bad context %s", ctx_json);
    tune_jinja_render_options o = {.context = ctx, .now = NOW};
    if (lim) o.limits = *lim;
    st = tune_jinja_render(t, &o, out, NULL, NULL, raised, err);
    cJSON_Delete(ctx);
    tune_jinja_free(t);
    return st;
}

static void check_cases(const render_case *cases, int n)
{
    for (int i = 0; i < n; i++) {
        tune_strbuf out = {0};
        tune_error err;
        int raised = 0;
        tune_status st = render(cases[i].src, cases[i].ctx, NULL, &out, &raised, &err);
        ck_assert_msg(st == TUNE_OK, "%s\n  failed: %d:%d: %s", cases[i].src, err.line, err.col, err.message);
        ck_assert_msg(out.len == strlen(cases[i].want) && !memcmp(out.data, cases[i].want, out.len),
                      "%s\n   got: [%s]\n  want: [%s]", cases[i].src, out.data ? out.data : "", cases[i].want);
        tune_strbuf_free(&out);
    }
}

static const render_case whitespace_cases[] = {
    {"a  {% if true %}\n  b\n  {% endif %}\nc",
     NULL,
     "a    b\nc"},
    {"  {%- if true -%}  x  {%- endif -%}  ",
     NULL,
     "x"},
    {"x\n  {%+ if true %}y{% endif %}\n",
     NULL,
     "x\n  y"},
    {"{% if true +%}\nkeep{% endif %}",
     NULL,
     "\nkeep"},
    {"a\n  {# comment #}\nb",
     NULL,
     "a\nb"},
    {"a {# c -#}   \n  b",
     NULL,
     "a b"},
    {"a\n\t{{ 1 }}\n",
     NULL,
     "a\n\t1"},
    {"{% raw %}{{ x }}{% endraw %}|{% raw -%}  {% if %} {%- endraw %}|",
     NULL,
     "{{ x }}|{% if %}|"},
    {"{% raw %}\n  raw\n  {% endraw %}\nafter",
     NULL,
     "\n  raw\nafter"},
    {"line1\r\nline2\r\n{% if true %}\r\nx\r\n{% endif %}\r\n",
     NULL,
     "line1\nline2\nx\n"},
    {"a\n\n",
     NULL,
     "a\n"},
    {"  {% for i in [1,2] %}\n  {{ i }}\n  {% endfor %}\n",
     NULL,
     "  1\n  2\n"},
    {"{{- ' a ' -}}  \n {{ 'b' }}",
     NULL,
     " a b"},
    {"x {%- set y = 1 %} z",
     NULL,
     "x z"},
    {"{% if true %}   \n{% endif %}|{{ 'x' }}   {% if true %}y{% endif %}",
     NULL,
     "   \n|x   y"},
    {"{%- for m in ['a', 'b'] -%}\n  [{{ m }}]\n{%- endfor %}\nend",
     NULL,
     "[a][b]end"},
    {"a 　{%- if true %}b{% endif %}",
     NULL,
     "ab"},
};

static const render_case expressions_cases[] = {
    {"{{ 'a\\n\\t\\\\\\'\\\"\\u00e9\\x41\\101' 'b' \"c\" }}",
     NULL,
     "a\n\t\\'\"éAAbc"},
    {"{{ 1_000 + 0x1F + 0o17 + 0b101 }} {{ 1.5e3 }} {{ 2.5E-3 }} {{ 1_0.5 }}",
     NULL,
     "1051 1500.0 0.0025 10.5"},
    {"{{ [1, 2,] }} {{ (1, 2) }} {{ () }} {{ {'a': 1, 'b': [2]} }} {{ {} }} {{ [] }} {{ (1,) }}",
     NULL,
     "[1, 2] (1, 2) () {'a': 1, 'b': [2]} {} [] (1,)"},
    {"{{ True }} {{ false }} {{ None }} {{ none }} {{ true }}",
     NULL,
     "True False None None True"},
    {"{{ 1 + 2 * 3 - 4 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 3 ** 2 }} {{ 7.0 // 2 }} {{ -7.5 % 2 }}",
     NULL,
     "5.0 3 -4 1 2 64 3.0 0.5"},
    {"{{ 'a' ~ 1 ~ none ~ x ~ [1] }} {{ 1 ~ 2 * 3 }}",
     NULL,
     "a1None[1] 16"},
    {"{{ 'ab' * 3 }} {{ 3 * 'x' }} {{ [1] * 2 }} {{ [1] + [2] }} {{ 'a' + 'b' }} {{ true + 1 }}",
     NULL,
     "ababab xxx [1, 1] [1, 2] ab 2"},
    {"{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ [1,2] == [1,2] }} {{ (1,2) == [1,2] }} {{ 'b' > 'a' }} {{ [1, 2] < [1, 3] }}",
     NULL,
     "True False True True True False True True"},
    {"{{ 'b' in 'abc' }} {{ 1 in [1,2] }} {{ 'k' in {'k':1} }} {{ 3 not in [1] }} {{ x in [1] }} {{ not x }} {{ 'a' in x }}",
     NULL,
     "True True True True False True False"},
    {"{{ 0 or 'x' }} {{ 'a' and 'b' }} {{ '' and 1 }} {{ none or [] }} {{ 1 if false }}|{{ 'y' if 0 else 'n' }} {{ 'a' if x is defined else 'b' if true else 'c' }}",
     NULL,
     "x b  [] |n b"},
    {"{{ -3 }} {{ - 2 ** 2 }} {{ -(2) }} {{ +5 }} {{ not true or true }} {{ not (true or true) }} {{ not 1 == 2 }}",
     NULL,
     "-3 4 -2 5 True False True"},
    {"{{ 10 / 4 }} {{ 1 / 3 }} {{ 2 ** -1 }} {{ 0.1 + 0.2 }} {{ 2 ** 62 }} {{ 1 + 1.5 }}",
     NULL,
     "2.5 0.3333333333333333 0.5 0.30000000000000004 4611686018427387904 2.5"},
    {"{{ ('x ' ~ 'y')|upper }}{{ 'a' ~ 'b'|upper }}{{ -1|abs }}{{ (1, 2)[0] }}{{ [[1, 2]][0][1] }}",
     NULL,
     "X YaB112"},
    {"{{ '%s=%d' % ('a', 3) }} {{ '%05.1f' % 3.14159 }} {{ '%r|%-4s|' % ('x', 'ab') }} {{ '%(k)s' % {'k': 1} }}",
     NULL,
     "a=3 003.1 'x'|ab  | 1"},
    {"{{ ('<'|safe) + '<' }} {{ '<' + ('<'|safe) }} {{ ('a'|safe) ~ '<' }}",
     NULL,
     "<&lt; &lt;< a<"},
};

static const render_case access_cases[] = {
    {"{{ x.a }}|{{ x['a'] }}|{{ x.b.c }}|{{ x['b']['c'] }}|{{ x.l[1] }}|{{ x.l[-1] }}|{{ x.l[5] }}|{{ x.l.0 }}|{{ x.zz }}|{{ x.items is defined }}",
     "{\"x\": {\"a\": 1, \"b\": {\"c\": 2}, \"l\": [1, 2, 3], \"items\": 5}}",
     "1|1|2|2|2|3||1||True"},
    {"{{ x['items'] }}|{{ x.get('items') }}|{{ x.keys()|list }}",
     "{\"x\": {\"items\": 5}}",
     "5|5|['items']"},
    {"{{ 'héllo'[1:3] }} {{ 'hello'[::2] }} {{ 'hello'[-3:] }} {{ [1,2,3,4][1:-1] }} {{ [1,2,3][::-1] }} {{ 'abc'[5:] }}|{{ 'héllo'[-1] }} {{ 'héllo'[::-1] }} {{ (1, 2, 3)[:2] }} {{ 'abc'[1] }}",
     NULL,
     "él hlo llo [2, 3] [3, 2, 1] |o olléh (1, 2) b"},
    {"{{ messages[0]['content'] }}{{ messages[0].content }}{{ messages|length }}{{ messages[-1].role }}{{ messages[3] is defined }}",
     "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
     "hihi1userFalse"},
    {"{{ x }}|{{ x is defined }}|{{ x|length }}|{% for i in x %}n{% endfor %}|{{ x == y }}|{{ x|default('d') }}",
     NULL,
     "|False|0||True|d"},
};

static const render_case printing_cases[] = {
    {"{{ [1, 'a', none, true, 1.5, {'k': (1,)}, ()] }}|{{ (1,) }}|{{ \"it's\" }}|{{ [\"it's\", 'a\"b\"\\'', '\\n\\t\\x01é\\xa0\\u2028😀'] }}",
     NULL,
     "[1, 'a', None, True, 1.5, {'k': (1,)}, ()]|(1,)|it's|[\"it's\", 'a\"b\"\\'', '\\n\\t\\x01é\\xa0\\u2028😀']"},
    {"{{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }} {{ 1.5e-7 }} {{ 2.0 }} {{ 1/3 }} {{ 10/2 }} {{ 1e100 }} {{ -0.0 }} {{ 123456789.0 * 1000000000 }} {{ 1/7 }}",
     NULL,
     "1e+16 1000000000000000.0 0.0001 1e-05 1.5e-07 2.0 0.3333333333333333 5.0 1e+100 -0.0 1.23456789e+17 0.14285714285714285"},
    {"{{ x }}",
     "{\"x\": [1, {\"k\": 2.5}, true, null, \"s\", [], {}]}",
     "[1, {'k': 2.5}, True, None, 's', [], {}]"},
    {"{{ x }} {{ y }} {{ z }}",
     "{\"x\": 12345678901234, \"y\": 2.5e-08, \"z\": -3}",
     "12345678901234 2.5e-08 -3"},
    {"{% set ns = namespace(a=1, b=[1, 'x']) %}{{ ns }}",
     NULL,
     "<Namespace {'a': 1, 'b': [1, 'x']}>"},
    {"{% set d = {'a': [1, {'b': none}]} %}{{ d }}|{{ d|string }}|{{ d.a }}",
     NULL,
     "{'a': [1, {'b': None}]}|{'a': [1, {'b': None}]}|[1, {'b': None}]"},
};

static const render_case for_loops_cases[] = {
    {"{% for i in [1,2,3] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }}{{ loop.cycle('a', 'b') }};{% endfor %}",
     NULL,
     "1032TrueFalse32a;2121FalseFalse313b;3210FalseTrue32a;"},
    {"{% for a, b in [[1, 2], [3, 4]] %}{{ a }}{{ b }}{% endfor %}{{ a }}",
     NULL,
     "1234"},
    {"{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}",
     "{\"d\": {\"z\": 1, \"a\": 2}}",
     "z=1;a=2;za"},
    {"{% for i in range(5) if i is odd %}{{ i }}{{ loop.index }}{{ loop.length }}{% else %}no{% endfor %}|{% for i in [1] if i > 5 %}x{% else %}none{% endfor %}",
     NULL,
     "112322|none"},
    {"{% for i in range(10) %}{% if i > 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}",
     NULL,
     "023"},
    {"{% for c in 'hé!' %}[{{ c }}]{% endfor %}{% for x in undefined_thing %}x{% else %}empty{% endfor %}",
     NULL,
     "[h][é][!]empty"},
    {"{% for i in [1,2] %}{% for j in [3,4] %}{{ loop.index }}{{ i }}{{ j }}|{% endfor %}{{ loop.index }};{% endfor %}",
     NULL,
     "113|214|1;123|224|2;"},
    {"{% for m in messages %}{{ loop.index0 }}{% if not loop.last %},{% endif %}{% endfor %}",
     "{\"messages\": [1, 2, 3]}",
     "0,1,2"},
};

static const render_case scoping_cases[] = {
    {"{% set x = 1 %}{% set a, b = 2, 3 %}{{ x }}{{ a }}{{ b }}{% set t = 1, 2 %}{{ t }}",
     NULL,
     "123(1, 2)"},
    {"{% set ns = namespace(c=0, l=[]) %}{% for i in range(3) %}{% set ns.c = ns.c + i %}{% set ns.l = ns.l + [i] %}{% endfor %}{{ ns.c }}{{ ns.l }}",
     NULL,
     "3[0, 1, 2]"},
    {"{% set x = 5 %}{% for i in [1, 2] %}[{{ x }}]{% set x = i %}{{ x }}{% endfor %}{{ x }}",
     NULL,
     "[5]1[5]25"},
    {"{% if true %}{% set y = 3 %}{% endif %}{{ y }}",
     NULL,
     "3"},
    {"{% set b %}hello {{ 1 + 1 }}{% set inner = 1 %}{% endset %}[{{ b }}]{{ inner }}{% set u | upper %}abc{% endset %}{{ u }}",
     NULL,
     "[hello 2]ABC"},
    {"{% filter upper %}{% set y = 3 %}a{{ y }}{% endfilter %}[{{ y }}]",
     NULL,
     "A3[]"},
    {"{% set ns = namespace(found=false) %}{% for m in ['a', 'b'] %}{% if m == 'b' %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }}",
     NULL,
     "True"},
    {"{% set bos_token = 'X' %}{{ bos_token }}",
     "{\"bos_token\": \"<s>\"}",
     "X"},
};

static const render_case macros_cases[] = {
    {"{% macro m(a, b=2, c='x') %}{{ a }}-{{ b }}-{{ c }}{% endmacro %}{{ m(1) }}|{{ m(1, 3) }}|{{ m(1, c='z') }}|{{ m() }}|",
     NULL,
     "1-2-x|1-3-x|1-2-z|-2-x|"},
    {"{% macro outer() %}[{{ caller() }}]{% endmacro %}{% call outer() %}inside{% endcall %}",
     NULL,
     "[inside]"},
    {"{% macro lst(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) lst([1,2]) %}<{{ x * 2 }}>{% endcall %}",
     NULL,
     "<2><4>"},
    {"{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(4) }}",
     NULL,
     "4321"},
    {"{% set g = 'top' %}{% macro m() %}{{ g }}{% endmacro %}{% set g = 'later' %}{{ m() }}",
     NULL,
     "later"},
    {"{% macro m(a, b=a * 2) %}{{ a }}{{ b }}{% set c = 9 %}{% endmacro %}{{ m(1) }}{{ c }}",
     NULL,
     "12"},
    {"{% for i in [1, 2] %}{% macro m() %}{{ i }}{% endmacro %}{{ m() }}{% endfor %}",
     NULL,
     "12"},
    {"{% macro m(x) %}{{ x|upper }}{% endmacro %}{{ m('a') ~ m('b') }}{{ m('c')|length }}",
     NULL,
     "AB1"},
};

static const render_case blocks_cases[] = {
    {"{% filter upper %}abc {{ 'd' }}{% endfilter %}{% filter trim | upper %}  x  {% endfilter %}",
     NULL,
     "ABC DX"},
    {"{% if 0 %}a{% elif '' %}b{% elif [1] %}c{% else %}d{% endif %}{% if none %}{% else %}e{% endif %}",
     NULL,
     "ce"},
    {"{% print 'p', 1 %}{% print [1] %}",
     NULL,
     "p1[1]"},
    {"{% generation %}gen {{ 1 }}{% endgeneration %} tail",
     NULL,
     "gen 1 tail"},
    {"{% set a = 5 %}{% with a = 1, b = a %}{{ a }}{{ b }}{% set c = 3 %}{% endwith %}{{ a }}[{{ c }}]|{% for i in [1, 2, 3] %}{% with x = i %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endwith %}{% endfor %}",
     NULL,
     "155[]|1"},
};

static const render_case filters_cases[] = {
    {"{{ '  a  '|trim }}|{{ 'xxaxx'|trim('x') }}|{{ [1,2,3]|length }}|{{ 'héllo'|length }}|{{ {'a':1}|count }}|{{ x|length }}|{{ ' 　a\\n'|trim }}",
     NULL,
     "a|a|3|5|1|0|a"},
    {"{{ [1,2]|first }}{{ [1,2]|last }}{{ []|first }}{{ 'abc'|first }}{{ {'a': 1, 'b': 2}|last }}|{{ [1,2]|join('-') }}|{{ users|join(', ', attribute='name') }}|{{ [1,'a',none]|join }}",
     "{\"users\": [{\"name\": \"a\"}, {\"name\": \"b\"}]}",
     "12ab|1-2|a, b|1aNone"},
    {"{{ 'aBc'|upper }}{{ 'aBc'|lower }}{{ 'a-b-c'|replace('-', '') }}{{ 'aaa'|replace('a', 'b', 2) }}{{ 'abc'|replace('', '.') }}",
     NULL,
     "ABCabcabcbba.a.b.c."},
    {"{{ x|default('d') }}|{{ none|default('d') }}|{{ ''|default('d', true) }}|{{ 0|d('z', boolean=true) }}|{{ 'v'|default('d') }}|{{ x|default }}",
     NULL,
     "d|None|d|z|v|"},
    {"{{ d|items|list }}|{{ d|dictsort }}|{{ d|dictsort(by='value') }}|{{ d|dictsort(reverse=true) }}|{{ d|dictsort(true) }}",
     "{\"d\": {\"b\": 2, \"A\": 3, \"c\": 1}}",
     "[('b', 2), ('A', 3), ('c', 1)]|[('A', 3), ('b', 2), ('c', 1)]|[('c', 1), ('b', 2), ('A', 3)]|[('c', 1), ('b', 2), ('A', 3)]|[('A', 3), ('b', 2), ('c', 1)]"},
    {"{{ 'abc'|list }}|{{ ['a','b']|map('upper')|list }}|{{ users|map(attribute='name')|list }}|{{ users|map(attribute='x', default='\?')|list }}|{{ ['a', 'b']|map('replace', 'a', 'z')|join }}",
     "{\"users\": [{\"name\": \"a\"}, {\"name\": \"b\"}]}",
     "['a', 'b', 'c']|['A', 'B']|['a', 'b']|['\?', '\?']|zb"},
    {"{{ [1,2,3,4]|select('odd')|list }}|{{ [1,2,3,4]|reject('even')|list }}|{{ [0,1,'',2]|select|list }}|{{ [1,2,3]|select('gt', 1)|list }}|{{ [1,5,3]|select('>', 2)|list }}|{{ ['a', 1]|select('string')|list }}",
     NULL,
     "[1, 3]|[1, 3]|[1, 2]|[2, 3]|[5, 3]|['a']"},
    {"{{ users|selectattr('on')|map(attribute='name')|list }}|{{ users|rejectattr('on')|map(attribute='name')|list }}|{{ users|selectattr('name', 'equalto', 'b')|list|length }}|{{ users|selectattr('name', 'in', ['a'])|list|length }}|{{ users|selectattr('p.q', 'defined') if false else users|selectattr('name', 'defined')|list|length }}",
     "{\"users\": [{\"name\": \"a\", \"on\": true, \"p\": {\"q\": 1}}, {\"name\": \"b\", \"on\": false}]}",
     "['a']|['b']|1|1|2"},
    {"{{ 1|string ~ 'x' }}|{{ '42'|int + 1 }}|{{ '4.7'|int }}|{{ 'x'|int }}|{{ 'x'|int(7) }}|{{ 3.9|int }}|{{ ' -12 '|int }}|{{ '2.5'|float }}|{{ 'a'|float }}|{{ 1|float }}|{{ true|int }}",
     NULL,
     "1x|43|4|0|7|3|-12|2.5|0.0|1.0|1"},
    {"{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent(width='>', blank=true) }}|{{ 'x\\n'|indent }}|{{ ''|indent(first=true) }}|",
     NULL,
     "a\n    b\n\n    c|  a\n  b|a\n>\n>b|x\n|    |"},
    {"{{ '<b>'|safe }}|{{ '<b>&\"\\''|escape }}|{{ '<b>'|e }}|{{ 'hello world'|capitalize }}|{{ 'hELLO'|capitalize }}|{{ 'hello-world foo(bar) x<y'|title }}",
     NULL,
     "<b>|&lt;b&gt;&amp;&#34;&#39;|&lt;b&gt;|Hello world|Hello|Hello-World Foo(Bar) X<Y"},
    {"{{ [3,1,2,1]|unique|list }}|{{ ['a','A','b']|unique|list }}|{{ ['a','A']|unique(case_sensitive=true)|list }}|{{ [1,2,3]|reverse|list }}|{{ 'abc'|reverse }}",
     NULL,
     "[3, 1, 2]|['a', 'b']|['a', 'A']|[3, 2, 1]|cba"},
    {"{{ [3,1,2]|sort }}|{{ [3,1,2]|sort(reverse=true) }}|{{ ['b','A','c']|sort }}|{{ ['b','A','c']|sort(case_sensitive=true) }}|{{ users|sort(attribute='age')|map(attribute='n')|join }}|{{ users|sort(attribute='age', reverse=true)|map(attribute='n')|join }}",
     "{\"users\": [{\"n\": \"x\", \"age\": 3}, {\"n\": \"y\", \"age\": 1}, {\"n\": \"z\", \"age\": 3}]}",
     "[1, 2, 3]|[3, 2, 1]|['A', 'b', 'c']|['A', 'b', 'c']|yxz|xzy"},
    {"{{ -3|abs }}{{ (-2.5)|abs }}|{{ 2.5|round }}|{{ 3.5|round }}|{{ 2.675|round(2) }}|{{ 3|round }}|{{ 2.1|round(0, 'ceil') }}|{{ 2.9|round(method='floor') }}|{{ [3,1,4]|max }}{{ [3,1,4]|min }}{{ ['b', 'A']|max }}{{ [1,2,3]|sum }}{{ users|sum(attribute='age') }}{{ []|max }}",
     "{\"users\": [{\"age\": 3}, {\"age\": 4}]}",
     "32.5|2.0|4.0|2.67|3|3.0|2.0|41b67"},
    {"{{ 'a b  c, d_e'|wordcount }}|{{ 'ab'|center(6) }}|{{ 'abc'|center(8) }}|{{ '%s-%s'|format(1, 2) }}",
     NULL,
     "4|  ab  |  abc   |1-2"},
    {"{{ 'ß'|upper }} {{ 'éa'|upper }} {{ 'ÉCOLE'|lower }} {{ 'élan vital'|title }} {{ 'ñandú'|capitalize }}",
     NULL,
     "SS ÉA école Élan Vital Ñandú"},
};

static const render_case generators_cases[] = {
    {"{% if []|select %}always true{% endif %}|{{ [1, 2]|map('string') is sequence }}|{{ [1, 2]|select is iterable }}|{{ ([3, 1]|reverse)[0] }}|{{ [1, 2]|select('odd')|list|length }}|{{ {'a': 1}|items is sequence }}",
     NULL,
     "always true|False|True||1|False"},
    {"{% for k, v in {'b': 1, 'a': 2}|items %}{{ k }}{{ v }}{% endfor %}|{{ [1, 1, 2]|unique|join }}|{{ ([1]|map('string')) == ['1'] }}|{{ [1, 2]|reverse|first }}",
     NULL,
     "b1a2|12|False|2"},
};

static const render_case tojson_cases[] = {
    {"{{ x|tojson }}|{{ x|tojson(indent=2) }}|{{ x|tojson(sort_keys=true) }}|{{ x|tojson(separators=(',', ':')) }}",
     "{\"x\": {\"b\": [1, 2.5, null, true], \"a\": \"é\\n\"}}",
     "{\"b\": [1, 2.5, null, true], \"a\": \"é\\n\"}|{\n  \"b\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"a\": \"é\\n\"\n}|{\"a\": \"é\\n\", \"b\": [1, 2.5, null, true]}|{\"b\":[1,2.5,null,true],\"a\":\"é\\n\"}"},
    {"{{ 'é\"\\\\\\t\\u0001'|tojson }}|{{ 1.0|tojson }}|{{ [1, (2, 3)]|tojson }}|{{ {}|tojson(indent=2) }}|{{ []|tojson(indent=2) }}|{{ {'a': []}|tojson(indent=0) }}",
     NULL,
     "\"é\\\"\\\\\\t\\u0001\"|1.0|[1, [2, 3]]|{}|[]|{\n\"a\": []\n}"},
    {"{{ x|tojson(ensure_ascii=true) }}|{{ x|tojson(indent='\\t') }}|{{ x|tojson(2) }}",
     "{\"x\": {\"k\": [\"é\", \"😀\", \"\\u0001\177\"]}}",
     "{\"k\": [\"\\u00e9\", \"\\ud83d\\ude00\", \"\\u0001\\u007f\"]}|{\n\t\"k\": [\n\t\t\"é\",\n\t\t\"😀\",\n\t\t\"\\u0001\177\"\n\t]\n}|{\"k\": [\"\\u00e9\", \"\\ud83d\\ude00\", \"\\u0001\\u007f\"]}"},
    {"{{ {1: 'a', none: 'b', true: 'c', 2.5: 'd'}|tojson }}",
     NULL,
     "{\"1\": \"c\", \"null\": \"b\", \"2.5\": \"d\"}"},
};

static const render_case methods_cases[] = {
    {"{{ 'a b'.split() }} {{ 'a,b,,c'.split(',') }} {{ '  a  b  '.split() }} {{ 'a b c'.split(' ', 1) }} {{ ' a b  '.split(none, 1) }} {{ ''.split() }} {{ ''.split(',') }}",
     NULL,
     "['a', 'b'] ['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c'] ['a', 'b  '] [] ['']"},
    {"[{{ ' x '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ ' a'.lstrip() }}|{{ 'a '.rstrip() }}|{{ '\\n\\nx\\n'.lstrip('\\n') }}|{{ 'abcba'.strip('ab') }}]",
     NULL,
     "[x|a|a|a|x\n|c]"},
    {"{{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith(('x', 'lo')) }} {{ 'hello world'.title() }} {{ \"they're 1st\".title() }} {{ 'hELLO'.capitalize() }} {{ 'aXb'.upper() }}{{ 'AxB'.lower() }}",
     NULL,
     "True True Hello World They'Re 1St Hello AXBaxb"},
    {"{{ 'a-b-c'.replace('-', '+') }} {{ 'a-b-c'.replace('-', '+', 1) }} {{ 'abcb'.find('b') }} {{ 'abcb'.rfind('b') }} {{ 'héb'.find('b') }} {{ 'abcb'.count('b') }} {{ ', '.join(['a','b']) }} {{ 'a\\nb\\r\\nc'.splitlines() }}",
     NULL,
     "a+b+c a+b-c 1 3 2 2 a, b ['a', 'b', 'c']"},
    {"{{ [1, 2, 1].count(1) }} {{ (1, 2).index(2) }} {{ '%s|' % [1] }}{{ 'x' % {'a': 1} }}{{ '%s' % (('a', 'b'),) }}",
     NULL,
     "2 1 [1]|x('a', 'b')"},
    {"{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 5) }} {{ d.items()|list }} {{ d.keys() | list }} {{ d.values() | list }}",
     "{\"d\": {\"a\": 1, \"b\": \"x\"}}",
     "1 None 5 [('a', 1), ('b', 'x')] ['a', 'b'] [1, 'x']"},
    {"{{ '{} and {}'.format(1, 'x') }} {{ '{0}{0}{name}'.format('a', name='b') }} {{ '{{}}{!r}'.format('q') }}",
     NULL,
     "1 and x aab {}'q'"},
    {"{% set content = '<think>a</think>\\n\\nb' %}{{ content.split('</think>')[-1].lstrip('\\n') }}{{ content.split('</think>')[0].split('<think>')[-1] }}",
     NULL,
     "ba"},
};

static const render_case tests_cases[] = {
    {"{{ x is defined }}{{ y is undefined }}{{ none is none }}{{ 'a' is string }}{{ {} is mapping }}{{ [] is sequence }}{{ 'a' is iterable }}{{ 1 is number }}{{ 1 is integer }}{{ 1.0 is float }}{{ true is boolean }}{{ y is sequence }}{{ 1 is iterable }}{{ true is integer }}",
     "{\"x\": 1}",
     "TrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueFalseFalse"},
    {"{{ true is true }}{{ 1 is true }}{{ false is false }}{{ 1 is eq 1 }}{{ 1 is equalto(1) }}{{ 1 is ne 2 }}{{ 2 is gt 1 }}{{ 2 is lt(1) }}{{ 3 is ge 3 }}{{ 3 is le 2 }}{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 1 is in [1] }}{{ 'ab' is lower }}{{ 'AB' is upper }}{{ 'a1' is lower }}{{ x is not none }}",
     "{\"x\": 1}",
     "TrueFalseTrueTrueTrueTrueTrueFalseTrueFalseTrueTrueTrueTrueTrueTrueTrueTrue"},
    {"{{ none is not defined }}{{ 'a' is not string }}{{ x is sameas none }}{{ 'upper' is filter }}{{ 'odd' is test }}{{ range is callable }}",
     "{\"x\": null}",
     "FalseFalseTrueTrueTrueTrue"},
};

static const render_case globals_cases[] = {
    {"{{ strftime_now('%d %b %Y %H:%M:%S %A %B %j %y %a %m %%') }}",
     NULL,
     "26 Jul 2024 00:00:00 Friday July 208 24 Fri 07 %"},
    {"{{ range(3)|list }}{{ range(1, 7, 2)|list }}{{ range(5, 0, -2)|list }}{{ range(0)|list }}{{ dict(a=1, b=2) }}{{ dict([('x', 1)], y=2) }}{{ namespace(a=1).a }}",
     NULL,
     "[0, 1, 2][1, 3, 5][5, 3, 1][]{'a': 1, 'b': 2}{'x': 1, 'y': 2}1"},
};
#define CASES(name)                                                                                                 \
    START_TEST(test_##name) { check_cases(name##_cases, N(name##_cases)); }                                         \
    END_TEST
CASES(whitespace)
CASES(expressions)
CASES(access)
CASES(printing)
CASES(for_loops)
CASES(scoping)
CASES(macros)
CASES(blocks)
CASES(filters)
CASES(generators)
CASES(tojson)
CASES(methods)
CASES(tests)
CASES(globals)

/* ---- failures ---- */

typedef struct error_case {
    const char *src, *ctx;
    int line, col;
    const char *msg; /* a part of the message */
} error_case;

/* Malformed templates: refused by the parser, where the problem is. */
static const error_case syntax_errors[] = {
    {"a{% if x %}b", NULL, 1, 2, "the 'if' block opened here is never closed (Jinja was looking for 'elif' or 'else' or 'endif')"},
    {"x\n{% for i in y %}", NULL, 2, 1, "the 'for' block opened here is never closed"},
    {"ab\n  {% endfor %}", NULL, 2, 6, "Encountered unknown tag 'endfor'."},
    {"{% if x %}\n{% endfor %}", NULL, 2, 4, "unknown tag 'endfor'. Jinja was looking for the following tags: 'elif' or "
                                           "'else' or 'endif'. The innermost block that needs to be closed is 'if' (line 1, column 1)"},
    {"{% if x %}{% else %}{% else %}{% endif %}", NULL, 1, 24, "unknown tag 'else'"},
    {"{% foo %}", NULL, 1, 4, "Encountered unknown tag 'foo'."},
    {"text\n {{ x", NULL, 2, 2, "'{{' is never closed"},
    {"{% if x", NULL, 1, 1, "'{%' is never closed"},
    {"{{ x|nofilter }}", NULL, 1, 6, "No filter named 'nofilter'."},
    {"{% for m in x %}{{ m is notest }}{% endfor %}", NULL, 1, 25, "No test named 'notest'."},
    {"{{ \"abc }}", NULL, 1, 4, "unterminated string literal"},
    {"{{ 'a\\x4' }}", NULL, 1, 6, "truncated \\x escape"},
    {"{{ 1 $ 2 }}", NULL, 1, 6, "unexpected character '$'"},
    {"{% if %}{% endif %}", NULL, 1, 7, "Expected an expression, got end of statement block"},
    {"{{ (1 }}", NULL, 1, 7, "unexpected '}', expected ')'"},
    {"{{ }}", NULL, 1, 4, "Expected an expression"},
    {"{{ f(a=1, 2) }}", NULL, 1, 5, "invalid syntax for function call expression"},
    {"{% macro m(a=1, b) %}{% endmacro %}", NULL, 1, 17, "non-default argument follows default argument"},
    {"{% break %}", NULL, 1, 4, "'break' outside of a for loop"},
    {"{% for i in x %}{% macro m() %}{% continue %}{% endmacro %}{% endfor %}", NULL, 1, 35, "'continue' outside"},
    {"{# unclosed", NULL, 1, 1, "missing end of comment tag"},
    {"{% raw %}abc", NULL, 1, 1, "missing end of raw directive"},
    {"{% set %}", NULL, 1, 8, "expected a variable name to assign to"},
    {"{% set true = 1 %}", NULL, 1, 8, "expected a variable name to assign to"},
    {"{% include 'x.jinja' %}", NULL, 1, 4, "the 'include' tag is not supported"},
    {"{% for x in y recursive %}{% endfor %}", NULL, 1, 15, "recursive for loops are not supported"},
    {"{{ f(*args) }}", NULL, 1, 6, "*args and **kwargs"},
    {"{% call m %}{% endcall %}", NULL, 1, 4, "expected call"},
    {"{{ x[1:2, 3] }}", NULL, 1, 5, "slices inside a tuple subscript"},
};

/* Templates that parse but fail while rendering (jinja2 fails there too). */
static const error_case runtime_errors[] = {
    {"{{ x.y }}", NULL, 1, 5, "'x' is undefined"},
    {"\n{{ m.content|trim }}{{ m.role.upper() }}", "{\"m\": {\"content\": \"x\"}}", 2, 30,
     "'dict object' has no attribute 'role'"},
    {"{{ none[0].x }}", NULL, 1, 11, "None has no element 0"},
    {"{{ messages[1].content }}", "{\"messages\": []}", 1, 15, "list object has no element 1"},
    {"{{ 'a' + 1 }}", NULL, 1, 8, "can only concatenate str (not \"int\") to str"},
    {"{{ x + 1 }}", NULL, 1, 6, "'x' is undefined"},
    {"{{ 1 < 'a' }}", NULL, 1, 4, "'<' not supported between instances of 'int' and 'str'"},
    {"{% for a, b in [[1]] %}{% endfor %}", NULL, 1, 4, "not enough values to unpack (expected 2, got 1)"},
    {"{{ 1 // 0 }}", NULL, 1, 6, "integer division or modulo by zero"},
    {"{{ 2 ** 70 }}", NULL, 1, 6, "integer overflow"},
    {"{% for m in messages %}{% endfor %}", "{\"messages\": null}", 1, 4, "'NoneType' object is not iterable"},
    {"{{ x|tojson }}", NULL, 1, 6, "Object of type Undefined is not JSON serializable"},
    {"{% if true %}{{ 1|nofilter }}{% endif %}", NULL, 1, 19, "No filter named 'nofilter' found."},
    {"{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", NULL, 1, 34, "macro 'm' takes not more than 1 argument(s)"},
    {"{% macro m(a) %}{% endmacro %}{{ m(b=2) }}", NULL, 1, 34, "macro 'm' takes no keyword argument 'b'"},
    {"{{ 'abc'.nomethod() }}", NULL, 1, 9, "'str object' has no attribute 'nomethod'"},
    {"{{ [].append(1) }}", NULL, 1, 6, "access to attribute 'append' of 'list' object is unsafe."},
    {"{{ {}.update(a=1) }}", NULL, 1, 6, "access to attribute 'update' of 'dict' object is unsafe."},
    {"{% set x = 1 %}{% set x.y = 2 %}", NULL, 1, 19, "cannot assign attribute on non-namespace object"},
    {"{% set ns = namespace() %}{% set ns._x = 1 %}", NULL, 1, 30, "cannot store underscore-prefixed attributes"},
    {"{{ namespace(_x=1) }}", NULL, 1, 4, "cannot store underscore-prefixed attributes"},
    {"{{ 'x'.split('') }}", NULL, 1, 7, "empty separator"},
    {"{{ 5() }}", NULL, 1, 4, "'int' object is not callable"},
    {"{{ [1]|join(x=1) }}", NULL, 1, 8, "join() got an unexpected keyword argument 'x'"},
    {"{{ [1] in {'a': 1} }}", NULL, 1, 4, "unhashable type: 'list'"},
    {"{{ x[1:] }}", "{\"x\": 5}", 1, 6, "'int' object is not subscriptable"},
    {"{{ [1]|select|length }}", NULL, 1, 15, "object of type 'generator' has no len()"},
    {"{{ 'a' % 'b' }}", NULL, 1, 8, "not all arguments converted during string formatting"},
};

static void check_errors(const error_case *cases, int n, tune_status want_status)
{
    for (int i = 0; i < n; i++) {
        tune_strbuf out = {0};
        tune_error err;
        int raised = 0;
        tune_status st = render(cases[i].src, cases[i].ctx, NULL, &out, &raised, &err);
        ck_assert_msg(st == want_status, "%s: status %d", cases[i].src, st);
        ck_assert_msg(st != TUNE_OK && !raised, "%s: raised", cases[i].src);
        ck_assert_str_eq(err.file, "test.jinja");
        ck_assert_msg(err.line == cases[i].line && err.col == cases[i].col && strstr(err.message, cases[i].msg),
                      "%s\n   got %d:%d: %s\n  want %d:%d: ...%s...", cases[i].src, err.line, err.col, err.message,
                      cases[i].line, cases[i].col, cases[i].msg);
        tune_strbuf_free(&out);
    }
}

START_TEST(test_syntax_errors) { check_errors(syntax_errors, N(syntax_errors), TUNE_ERR_INPUT); }
END_TEST

START_TEST(test_runtime_errors) { check_errors(runtime_errors, N(runtime_errors), TUNE_ERR_INPUT); }
END_TEST

START_TEST(test_raise_exception)
{
    tune_strbuf out = {0};
    tune_error err;
    int raised = 0;
    const char *src = "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}\n"
                      "  {{- raise_exception('Unsupported role: ' ~ m.role ~ ' (say \"user\")') }}{% endif %}"
                      "{{ m.content }}{% endfor %}";
    tune_status st = render(src, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"tool\"}]}", NULL,
                            &out, &raised, &err);
    ck_assert_int_eq(st, TUNE_ERR_INPUT);
    ck_assert_int_eq(raised, 1);
    ck_assert_str_eq(err.message, "Unsupported role: tool (say \"user\")");
    ck_assert_str_eq(err.file, "test.jinja");
    ck_assert_int_eq(err.line, 2);
    ck_assert_int_eq(err.col, 7);
    ck_assert_str_eq(out.data, "a"); /* what was rendered before it */
    tune_strbuf_free(&out);
    /* From inside a macro, and with no argument (Python prints None). */
    raised = 0;
    st = render("{% macro check() %}{{ raise_exception() }}{% endmacro %}{{ check() }}", NULL, NULL, &out, &raised, &err);
    ck_assert(st == TUNE_ERR_INPUT && raised);
    ck_assert_str_eq(err.message, "None");
    tune_strbuf_free(&out);
    /* Other failures are not raises. */
    raised = 1;
    ck_assert_int_eq(render("{{ x.y }}", NULL, NULL, &out, &raised, &err), TUNE_ERR_INPUT);
    ck_assert_int_eq(raised, 0);
    tune_strbuf_free(&out);
}
END_TEST

/* ---- limits ---- */

static void check_limit(const char *src, const tune_jinja_limits *lim, const char *msg)
{
    tune_strbuf out = {0};
    tune_error err;
    int raised;
    tune_status st = render(src, NULL, lim, &out, &raised, &err);
    ck_assert_msg(st == TUNE_ERR_INPUT && strstr(err.message, msg), "%s: %d %s", src, st, err.message);
    ck_assert_str_eq(err.file, "test.jinja");
    ck_assert_int_gt(err.line, 0);
    ck_assert_int_gt(err.col, 0);
    tune_strbuf_free(&out);
}

START_TEST(test_limits)
{
    /* Defaults: 64 nested macro calls, 1,000,000 iterations, 16 MiB of text, 1 GiB of work. */
    check_limit("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", NULL, "max_depth (64)");
    check_limit("{% macro f(n) %}{% call f(n + 1) %}x{% endcall %}{% endmacro %}{{ f(0) }}", NULL, "max_depth");
    check_limit("{% for i in range(10**9) %}{% endfor %}", NULL, "MAX_RANGE (100000)"); /* jinja2's sandbox */
    check_limit("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", NULL,
                "max_iterations (1000000)");
    check_limit("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                NULL, "max_output (16777216 bytes)");
    check_limit("{{ 'x' * 100000000 }}", NULL, "max_output");
    check_limit("{% set ns = namespace(l=[1]) %}{% for i in range(30) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
                NULL, "max_iterations");
    check_limit("{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = [ns.l] %}{% endfor %}", NULL,
                "nested deeper than");
    /* 1 GiB of work beyond the loops: strings and lists grown by concatenation
     * in a loop are copied whole each time, a long list searched each time. */
    check_limit("{% set ns = namespace(s='') %}{% for i in range(100000) %}{% set ns.s = ns.s ~ '0123456789' %}"
                "{% endfor %}",
                NULL, "max_work (1073741824)");
    check_limit("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [i] %}{% endfor %}",
                NULL, "max_work");
    check_limit("{% set l = range(100000) | list %}{% for i in range(100000) %}{% if -1 in l %}{% endif %}"
                "{% endfor %}",
                NULL, "max_work");
    const tune_jinja_limits small_work = {.max_work = 1000};
    check_limit("{{ 'x' * 2000 }}", &small_work, "max_work (1000)");
    /* Bounds the caller sets. */
    tune_jinja_limits lim = {.max_depth = 3, .max_iterations = 10, .max_output = 100};
    const char *recurse3 = "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}";
    check_limit(recurse3, &lim, "max_depth (3)");
    check_limit("{% for i in range(11) %}{% endfor %}", &lim, "max_iterations (10 items)"); /* the list itself */
    check_limit("{% for i in range(5) %}{% for j in range(3) %}{% endfor %}{% endfor %}", &lim,
                "more than max_iterations (10) loop iterations");
    check_limit("{% for i in range(10) %}{{ '0123456789' }}x{% endfor %}", &lim, "max_output (100 bytes)");
    check_limit("{% set x %}{% for i in range(10) %}{{ '0123456789' }}x{% endfor %}{% endset %}", &lim, "max_output");
    /* ... and just inside them. */
    tune_strbuf out = {0};
    tune_error err;
    int raised;
    ck_assert_int_eq(render("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(2) }}", NULL, &lim,
                            &out, &raised, &err),
                     TUNE_OK);
    ck_assert_int_eq(render("{% for i in range(10) %}{{ '012345678' }}{% endfor %}", NULL, &lim, &out, &raised, &err),
                     TUNE_OK);
    ck_assert_uint_eq(out.len, 90);
    tune_strbuf_free(&out);
}
END_TEST

/* A template that nests too deeply cannot exhaust the C stack. */
START_TEST(test_nesting_bounds)
{
    const int n = 5000;
    tune_strbuf s = {0};
    const char *const open[] = {"(", "[", "{% if x %}", "-", "not "};
    const char *const close[] = {")", "]", "{% endif %}", "", ""};
    for (int k = 0; k < 5; k++) {
        tune_strbuf_puts(&s, k == 2 ? "" : "{{ ");
        for (int i = 0; i < n; i++) tune_strbuf_puts(&s, open[k]);
        tune_strbuf_puts(&s, k == 2 ? "" : "1");
        for (int i = 0; i < n; i++) tune_strbuf_puts(&s, close[k]);
        tune_strbuf_puts(&s, k == 2 ? "" : " }}");
        check_limit(s.data, NULL, "nested too deeply");
        s.len = 0;
    }
    /* Chains the parser builds without recursing: long enough, the tree is refused. */
    tune_strbuf_puts(&s, "{{ 1");
    for (int i = 0; i < n; i++) tune_strbuf_puts(&s, " + 1");
    tune_strbuf_puts(&s, " }}");
    check_limit(s.data, NULL, "nested too deeply");
    s.len = 0;
    tune_strbuf_puts(&s, "{% if x %}");
    for (int i = 0; i < n; i++) tune_strbuf_puts(&s, "{% elif x %}");
    tune_strbuf_puts(&s, "{% endif %}");
    check_limit(s.data, NULL, "nested too deeply");
    /* A realistic depth is fine. */
    s.len = 0;
    tune_strbuf_puts(&s, "{{ 0");
    for (int i = 0; i < 200; i++) tune_strbuf_puts(&s, " + 1");
    tune_strbuf_puts(&s, " }}");
    tune_strbuf out = {0};
    tune_error err;
    int raised;
    ck_assert_int_eq(render(s.data, NULL, NULL, &out, &raised, &err), TUNE_OK);
    ck_assert_str_eq(out.data, "200");
    tune_strbuf_free(&out);
    tune_strbuf_free(&s);
}
END_TEST

/* ---- generation spans, values, reuse ---- */

START_TEST(test_generation_spans)
{
    const char *src = "{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' %}{% generation %}"
                      "{{ m.content }}</s>{% endgeneration %}{% else %}{{ m.content }}{% endif %}\n{% endfor %}";
    tune_jinja *t;
    tune_error err;
    ck_assert_int_eq(tune_jinja_parse(src, strlen(src), "gen.jinja", &t, &err), TUNE_OK);
    cJSON *ctx = cJSON_Parse("{\"messages\": [{\"role\": \"user\", \"content\": \"안녕\"}, {\"role\": \"assistant\", "
                             "\"content\": \"반가워요\"}, {\"role\": \"user\", \"content\": \"x\"}, {\"role\": "
                             "\"assistant\", \"content\": \"\"}]}");
    tune_jinja_render_options o = {.context = ctx, .now = NOW};
    tune_strbuf out = {0};
    tune_strbuf_puts(&out, "kept:"); /* rendering appends; spans count from the render's start */
    tune_jinja_span *spans;
    int n, raised;
    ck_assert_int_eq(tune_jinja_render(t, &o, &out, &spans, &n, &raised, &err), TUNE_OK);
    /* trim_blocks eats the newline after endif; Transformers' spans: (23, 39), (57, 61) in bytes */
    ck_assert_str_eq(out.data, "kept:<user>안녕<assistant>반가워요</s><user>x<assistant></s>");
    ck_assert_int_eq(n, 2);
    ck_assert(spans[0].start == 23 && spans[0].end == 39 && spans[1].start == 57 && spans[1].end == 61);
    free(spans);
    /* Spans may be left out; a template without generation blocks gives none. */
    tune_strbuf_free(&out);
    ck_assert_int_eq(tune_jinja_render(t, &o, &out, NULL, NULL, NULL, &err), TUNE_OK);
    tune_jinja_free(t);
    ck_assert_int_eq(tune_jinja_parse("x", 1, "x", &t, &err), TUNE_OK);
    ck_assert_int_eq(tune_jinja_render(t, &o, &out, &spans, &n, NULL, &err), TUNE_OK);
    ck_assert(spans == NULL && n == 0);
    tune_jinja_free(t);
    tune_strbuf_free(&out);
    cJSON_Delete(ctx);
}
END_TEST

START_TEST(test_context_values)
{
    /* JSON numbers: integral ones are Python ints, the rest floats; strings keep their bytes. */
    const render_case cases[] = {
        {"{{ a }} {{ b }} {{ c }} {{ d }} {{ a is integer }} {{ b is float }} {{ e }}",
         "{\"a\": 3, \"b\": 1.5, \"c\": 1e20, \"d\": -7, \"e\": [true, null, \"é\"]}",
         "3 1.5 1e+20 -7 True True [True, None, 'é']"},
        {"{{ y|length }} {{ y }}", "{\"y\": \"\\ud83d\\ude00\"}", "1 😀"},
    };
    check_cases(cases, N(cases));
    tune_strbuf out = {0};
    tune_error err;
    int raised;
    /* The context must be an object; no context at all is an empty one. */
    ck_assert_int_eq(render("x", "[1]", NULL, &out, &raised, &err), TUNE_ERR_INPUT);
    ck_assert_int_eq(render("{{ x }}y", NULL, NULL, &out, &raised, &err), TUNE_OK);
    ck_assert_str_eq(out.data + out.len - 1, "y");
    tune_strbuf_free(&out);
    /* The source need not be NUL-terminated. */
    tune_jinja *t;
    ck_assert_int_eq(tune_jinja_parse("{{ 1 }}{{ 2 }}", 7, "x", &t, &err), TUNE_OK);
    tune_jinja_render_options o = {0};
    ck_assert_int_eq(tune_jinja_render(t, &o, &out, NULL, NULL, NULL, &err), TUNE_OK);
    ck_assert_str_eq(out.data, "1");
    tune_strbuf_free(&out);
    tune_jinja_free(t);
}
END_TEST

/* Namespaces and closures can form cycles; a render must still free them all
 * (the sanitizer build checks). */
START_TEST(test_cycles_are_freed)
{
    const render_case cases[] = {
        {"{% set ns = namespace() %}{% set ns.me = ns %}{% set ns.l = [ns, ns] %}{{ ns.me.me.l|length }}", NULL, "2"},
        {"{% macro m() %}{{ 1 }}{% endmacro %}{% set ns = namespace(f=m) %}{% set ns.ns = ns %}{{ ns.ns.f() }}", NULL,
         "1"},
        {"{% for i in [1] %}{% macro m() %}{{ loop.index }}{% endmacro %}{% set ns = namespace(m=m, l=loop) %}"
         "{% set ns.s = ns %}{{ ns.m() }}{% endfor %}",
         NULL, "1"},
    };
    check_cases(cases, N(cases));
}
END_TEST

/* ---- real templates ---- */

/* The context Transformers' apply_chat_template gives a golden case. */
static cJSON *golden_context(const cJSON *g, const cJSON *c)
{
    const cJSON *tpl = cJSON_GetArrayItem(cJSON_GetObjectItem(g, "templates"),
                                          cJSON_GetObjectItem(c, "template")->valueint);
    const cJSON *conv = cJSON_GetArrayItem(cJSON_GetObjectItem(g, "conversations"),
                                           cJSON_GetObjectItem(c, "conversation")->valueint);
    cJSON *ctx = cJSON_CreateObject();
    cJSON_AddItemToObject(ctx, "messages", cJSON_Duplicate(conv, 1));
    cJSON_AddBoolToObject(ctx, "add_generation_prompt", cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt")));
    cJSON_AddStringToObject(ctx, "bos_token", cJSON_GetObjectItem(tpl, "bos_token")->valuestring);
    cJSON_AddStringToObject(ctx, "eos_token", cJSON_GetObjectItem(tpl, "eos_token")->valuestring);
    cJSON_AddNullToObject(ctx, "tools");
    cJSON_AddNullToObject(ctx, "documents");
    return ctx;
}

static tune_jinja **parse_golden_templates(const cJSON *g, int *n)
{
    const cJSON *tpls = cJSON_GetObjectItem(g, "templates");
    *n = cJSON_GetArraySize(tpls);
    tune_jinja **t = calloc((size_t)*n, sizeof *t);
    ck_assert_ptr_nonnull(t);
    for (int i = 0; i < *n; i++) {
        char path[1024], *src;
        size_t len;
        tune_error err;
        snprintf(path, sizeof path, "%s/jinja/%s", test_data_dir(),
                 cJSON_GetObjectItem(cJSON_GetArrayItem(tpls, i), "file")->valuestring);
        ck_assert_msg(tune_read_file(path, &src, &len, &err) == TUNE_OK, "%s", err.message);
        ck_assert_msg(tune_jinja_parse(src, len, path, &t[i], &err) == TUNE_OK, "%s:%d:%d: %s", path, err.line,
                      err.col, err.message);
        free(src);
    }
    return t;
}

START_TEST(test_golden)
{
    cJSON *g = test_read_json("jinja/golden.json");
    int ntpl, checked = 0;
    tune_jinja **tpl = parse_golden_templates(g, &ntpl);
    ck_assert_int_ge(ntpl, 40);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g, "cases"))
    {
        int ti = cJSON_GetObjectItem(c, "template")->valueint;
        const char *file = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(g, "templates"), ti), "file")
                               ->valuestring;
        cJSON *ctx = golden_context(g, c);
        tune_jinja_render_options o = {.context = ctx, .now = (long long)cJSON_GetObjectItem(g, "now")->valuedouble};
        tune_strbuf out = {0};
        tune_error err;
        tune_jinja_span *spans = NULL;
        int n = 0, raised = 0;
        tune_status st = tune_jinja_render(tpl[ti], &o, &out, &spans, &n, &raised, &err);
        const cJSON *text = cJSON_GetObjectItem(c, "text"), *error = cJSON_GetObjectItem(c, "error");
        const cJSON *gen = cJSON_GetObjectItem(c, "generation");
        if (text) {
            ck_assert_msg(st == TUNE_OK, "%s case %d: %s", file, checked, err.message);
            ck_assert_msg(out.len == strlen(text->valuestring) && !memcmp(out.data, text->valuestring, out.len),
                          "%s case %d:\n got: [%s]\nwant: [%s]", file, checked, out.data ? out.data : "",
                          text->valuestring);
            ck_assert_int_eq(n, cJSON_GetArraySize(gen));
            for (int k = 0; k < n; k++) {
                const cJSON *span = cJSON_GetArrayItem(gen, k);
                ck_assert_uint_eq(spans[k].start, (size_t)cJSON_GetArrayItem(span, 0)->valuedouble);
                ck_assert_uint_eq(spans[k].end, (size_t)cJSON_GetArrayItem(span, 1)->valuedouble);
            }
        } else if (error) {
            ck_assert_msg(st == TUNE_ERR_INPUT && raised, "%s case %d: want the template's exception", file, checked);
            ck_assert_str_eq(err.message, error->valuestring);
        } else { /* Python failed otherwise (an undefined name, None iterated, ...): so must tune */
            ck_assert_msg(st == TUNE_ERR_INPUT && !raised, "%s case %d: want a failure (%s)", file, checked,
                          cJSON_GetObjectItem(c, "failure")->valuestring);
        }
        free(spans);
        tune_strbuf_free(&out);
        cJSON_Delete(ctx);
        checked++;
    }
    ck_assert_int_ge(checked, 1000);
    for (int i = 0; i < ntpl; i++) tune_jinja_free(tpl[i]);
    free(tpl);
    cJSON_Delete(g);
}
END_TEST

/* One parsed template, rendered from several threads at once: each gets
 * what a lone render gives (rendering never writes to the template). */
START_TEST(test_concurrent_renders)
{
    cJSON *g = test_read_json("jinja/golden.json");
    int ntpl;
    tune_jinja **tpl = parse_golden_templates(g, &ntpl);
    const cJSON *cases = cJSON_GetObjectItem(g, "cases");
    enum { RUNS = 64 };
    int ncases = cJSON_GetArraySize(cases), ok[RUNS] = {0};
    #pragma omp parallel for num_threads(4)
    for (int r = 0; r < RUNS; r++) {
        const cJSON *c = cJSON_GetArrayItem(cases, (r * 37) % ncases);
        const cJSON *text = cJSON_GetObjectItem(c, "text");
        cJSON *ctx = golden_context(g, c);
        tune_jinja_render_options o = {.context = ctx, .now = (long long)cJSON_GetObjectItem(g, "now")->valuedouble};
        tune_strbuf out = {0};
        tune_error err;
        tune_status st = tune_jinja_render(tpl[cJSON_GetObjectItem(c, "template")->valueint], &o, &out, NULL, NULL,
                                           NULL, &err);
        ok[r] = text ? st == TUNE_OK && !strcmp(out.data ? out.data : "", text->valuestring) : st != TUNE_OK;
        tune_strbuf_free(&out);
        cJSON_Delete(ctx);
    }
    for (int r = 0; r < RUNS; r++) ck_assert_msg(ok[r], "run %d", r);
    for (int i = 0; i < ntpl; i++) tune_jinja_free(tpl[i]);
    free(tpl);
    cJSON_Delete(g);
}
END_TEST

static Suite *jinja_suite(void)
{
    Suite *s = suite_create("jinja");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_whitespace);
    tcase_add_test(tc, test_expressions);
    tcase_add_test(tc, test_access);
    tcase_add_test(tc, test_printing);
    tcase_add_test(tc, test_for_loops);
    tcase_add_test(tc, test_scoping);
    tcase_add_test(tc, test_macros);
    tcase_add_test(tc, test_blocks);
    tcase_add_test(tc, test_filters);
    tcase_add_test(tc, test_generators);
    tcase_add_test(tc, test_tojson);
    tcase_add_test(tc, test_methods);
    tcase_add_test(tc, test_tests);
    tcase_add_test(tc, test_globals);
    tcase_add_test(tc, test_syntax_errors);
    tcase_add_test(tc, test_runtime_errors);
    tcase_add_test(tc, test_raise_exception);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_nesting_bounds);
    tcase_add_test(tc, test_generation_spans);
    tcase_add_test(tc, test_context_values);
    tcase_add_test(tc, test_cycles_are_freed);
    tcase_add_test(tc, test_golden);
    tcase_add_test(tc, test_concurrent_renders);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(jinja_suite());
}
