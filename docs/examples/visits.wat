;; visits(page) = how many times `page` was visited, counting this one: a read-modify-write
;; of the key named by argument 0, through the worker at the call's consistency level.
;;   squall fn register visits docs/examples/visits.wat
;;   squall fn call visits home --reads home      # 1, then 2, ...
(module
  (import "squall" "arg_len" (func $arg_len (param i32) (result i32)))
  (import "squall" "arg_read" (func $arg_read (param i32 i32)))
  (import "squall" "get_int" (func $get_int (param i32 i32) (result i64)))
  (import "squall" "put_int" (func $put_int (param i32 i32 i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i64)
    (local $len i32) (local $n i64)
    ;; The key's name, copied to address 0.
    (local.set $len (call $arg_len (i32.const 0)))
    (call $arg_read (i32.const 0) (i32.const 0))
    (local.set $n (i64.add (call $get_int (i32.const 0) (local.get $len)) (i64.const 1)))
    (call $put_int (i32.const 0) (local.get $len) (local.get $n))
    (local.get $n)))
