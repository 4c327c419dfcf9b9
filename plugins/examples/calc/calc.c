/* calc: exact-enough arithmetic and unit conversion for agents, as a Convergio plugin.
 *
 * Tools:
 *   evaluate {expression}        -> {"value": x}
 *       + - * / % ^ (right-assoc), parentheses, unary minus, constants pi and e, functions
 *       sqrt abs ln log10 exp sin cos tan floor ceil round.
 *   convert  {value, from, to}   -> {"value": x, "from": "km", "to": "mi"}
 *       length m km cm mm mi yd ft in; mass kg g mg lb oz t; time s ms min h d;
 *       data B KB MB GB KiB MiB GiB; temperature C F K.
 */
#include "../../sdk/convergio_plugin.h"

#include <ctype.h>
#include <math.h>

typedef struct {
    const char *p;
    const char *err;
} parser;

static double expr(parser *ps);

static void skip(parser *ps) {
    while (isspace((unsigned char)*ps->p)) ps->p++;
}

static double primary(parser *ps) {
    skip(ps);
    if (ps->err) return 0;
    if (*ps->p == '(') {
        ps->p++;
        double v = expr(ps);
        skip(ps);
        if (*ps->p != ')') {
            ps->err = "expected ')'";
            return 0;
        }
        ps->p++;
        return v;
    }
    if (*ps->p == '-') {
        ps->p++;
        return -primary(ps);
    }
    if (*ps->p == '+') {
        ps->p++;
        return primary(ps);
    }
    if (isdigit((unsigned char)*ps->p) || *ps->p == '.') {
        char *end;
        double v = strtod(ps->p, &end);
        if (end == ps->p) ps->err = "bad number";
        ps->p = end;
        return v;
    }
    if (isalpha((unsigned char)*ps->p)) {
        char name[16];
        size_t n = 0;
        while (isalnum((unsigned char)*ps->p) && n < sizeof name - 1) name[n++] = *ps->p++;
        name[n] = 0;
        if (!strcmp(name, "pi")) return 3.14159265358979323846;
        if (!strcmp(name, "e")) return 2.71828182845904523536;
        skip(ps);
        if (*ps->p != '(') {
            ps->err = "unknown name";
            return 0;
        }
        double x = primary(ps);
        if (!strcmp(name, "sqrt")) return sqrt(x);
        if (!strcmp(name, "abs")) return fabs(x);
        if (!strcmp(name, "ln")) return log(x);
        if (!strcmp(name, "log10")) return log10(x);
        if (!strcmp(name, "exp")) return exp(x);
        if (!strcmp(name, "sin")) return sin(x);
        if (!strcmp(name, "cos")) return cos(x);
        if (!strcmp(name, "tan")) return tan(x);
        if (!strcmp(name, "floor")) return floor(x);
        if (!strcmp(name, "ceil")) return ceil(x);
        if (!strcmp(name, "round")) return round(x);
        ps->err = "unknown function";
        return 0;
    }
    ps->err = *ps->p ? "unexpected character" : "unexpected end of expression";
    return 0;
}

static double power(parser *ps) {
    double base = primary(ps);
    skip(ps);
    if (*ps->p == '^') {
        ps->p++;
        return pow(base, power(ps));
    }
    return base;
}

static double term(parser *ps) {
    double v = power(ps);
    for (;;) {
        skip(ps);
        char op = *ps->p;
        if (op != '*' && op != '/' && op != '%') return v;
        ps->p++;
        double r = power(ps);
        if (op == '*') v *= r;
        else if (op == '/') v /= r;
        else v = fmod(v, r);
    }
}

static double expr(parser *ps) {
    double v = term(ps);
    for (;;) {
        skip(ps);
        char op = *ps->p;
        if (op != '+' && op != '-') return v;
        ps->p++;
        double r = term(ps);
        v = op == '+' ? v + r : v - r;
    }
}

static void put_number(double v) {
    if (isnan(v) || isinf(v)) fputs("null", stdout);
    else if (v == floor(v) && fabs(v) < 9007199254740992.0) printf("%.0f", v);
    else printf("%.15g", v);
}

static int evaluate(cvg_span args) {
    cvg_span v;
    char *text = cvg_get(args, "expression", &v) ? cvg_string(v, NULL) : NULL;
    if (!text) return cvg_fail(64, "missing argument: expression");
    parser ps = {text, NULL};
    double value = expr(&ps);
    skip(&ps);
    if (!ps.err && *ps.p) ps.err = "unexpected character";
    if (ps.err) return cvg_fail(65, "%s at offset %d", ps.err, (int)(ps.p - text));
    if (isnan(value) || isinf(value)) return cvg_fail(65, "the result is not a finite number");
    fputs("{\"value\":", stdout);
    put_number(value);
    putchar('}');
    return 0;
}

typedef struct {
    const char *name;
    char kind;     /* l length, m mass, t time, d data */
    double factor; /* to the base unit: m, kg, s, B */
} unit;

static const unit UNITS[] = {
    {"m", 'l', 1},           {"km", 'l', 1000},        {"cm", 'l', 0.01},
    {"mm", 'l', 0.001},      {"mi", 'l', 1609.344},    {"yd", 'l', 0.9144},
    {"ft", 'l', 0.3048},     {"in", 'l', 0.0254},      {"kg", 'm', 1},
    {"g", 'm', 0.001},       {"mg", 'm', 1e-6},        {"lb", 'm', 0.45359237},
    {"oz", 'm', 0.028349523125}, {"t", 'm', 1000},     {"s", 't', 1},
    {"ms", 't', 0.001},      {"min", 't', 60},         {"h", 't', 3600},
    {"d", 't', 86400},       {"B", 'd', 1},            {"KB", 'd', 1e3},
    {"MB", 'd', 1e6},        {"GB", 'd', 1e9},         {"KiB", 'd', 1024},
    {"MiB", 'd', 1048576},   {"GiB", 'd', 1073741824},
};

static const unit *find_unit(const char *name) {
    for (size_t i = 0; i < sizeof UNITS / sizeof *UNITS; i++)
        if (!strcmp(UNITS[i].name, name)) return &UNITS[i];
    return NULL;
}

static int is_temp(const char *u) { return !strcmp(u, "C") || !strcmp(u, "F") || !strcmp(u, "K"); }

static double to_kelvin(double v, const char *u) {
    if (!strcmp(u, "C")) return v + 273.15;
    if (!strcmp(u, "F")) return (v - 32) * 5 / 9 + 273.15;
    return v;
}

static double from_kelvin(double k, const char *u) {
    if (!strcmp(u, "C")) return k - 273.15;
    if (!strcmp(u, "F")) return (k - 273.15) * 9 / 5 + 32;
    return k;
}

static int convert(cvg_span args) {
    cvg_span v;
    double value;
    if (!cvg_get(args, "value", &v)) return cvg_fail(64, "missing argument: value");
    if (!cvg_number(v, &value)) return cvg_fail(65, "value must be a number");
    char *from = cvg_get(args, "from", &v) ? cvg_string(v, NULL) : NULL;
    char *to = cvg_get(args, "to", &v) ? cvg_string(v, NULL) : NULL;
    if (!from || !to) return cvg_fail(64, "missing argument: from and to are required");
    double out;
    if (is_temp(from) || is_temp(to)) {
        if (!is_temp(from) || !is_temp(to))
            return cvg_fail(65, "cannot convert %s to %s", from, to);
        out = from_kelvin(to_kelvin(value, from), to);
    } else {
        const unit *a = find_unit(from), *b = find_unit(to);
        if (!a) return cvg_fail(65, "unknown unit: %s", from);
        if (!b) return cvg_fail(65, "unknown unit: %s", to);
        if (a->kind != b->kind) return cvg_fail(65, "cannot convert %s to %s", from, to);
        out = value * a->factor / b->factor;
    }
    fputs("{\"value\":", stdout);
    put_number(out);
    fputs(",\"from\":", stdout);
    cvg_put_string(from, strlen(from));
    fputs(",\"to\":", stdout);
    cvg_put_string(to, strlen(to));
    putchar('}');
    return 0;
}

int main(void) {
    cvg_call call;
    if (cvg_read_call(&call) != 0) return cvg_fail(65, "input is not a JSON call");
    if (cvg_is(call.tool, "evaluate")) return evaluate(call.args);
    if (cvg_is(call.tool, "convert")) return convert(call.args);
    return cvg_fail(66, "unknown tool");
}
