// Command hello is the image testenv's own tests import into dockerd.
package main

import "fmt"

func main() { fmt.Println("hello") }
