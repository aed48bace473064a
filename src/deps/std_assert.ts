// @ts-types="./std_assert.d.ts"
export * from "@std/assert";
