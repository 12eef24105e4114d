;; inc_sq(x) = (x + 1)^2: a Squall function in WebAssembly text.
;; Register and call it on `squall up`:
;;   squall fn register inc_sq docs/examples/inc_sq.wat
;;   squall fn call inc_sq 3                      # prints 16
(module
  ;; Argument i of the call as an integer (traps if it is not one).
  (import "squall" "arg_int" (func $arg_int (param i32) (result i64)))
  ;; `run` is the function; its i64 is the call's result.
  (func (export "run") (result i64)
    (local $x i64)
    (local.set $x (i64.add (call $arg_int (i32.const 0)) (i64.const 1)))
    (i64.mul (local.get $x) (local.get $x))))
