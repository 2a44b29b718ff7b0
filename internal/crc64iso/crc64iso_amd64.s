#include "textflag.h"

// func fold(state uint64, p []byte, k *[4]uint64) (lo, hi uint64)
TEXT ·fold(SB), NOSPLIT, $0-56
	MOVQ state+0(FP), X0
	MOVQ p_base+8(FP), SI
	MOVQ p_len+16(FP), CX
	MOVQ k+32(FP), AX

	// Four blocks in flight, the state in the first.
	MOVOU (SI), X1
	MOVOU 16(SI), X2
	MOVOU 32(SI), X3
	MOVOU 48(SI), X4
	PXOR  X0, X1
	ADDQ  $64, SI
	SUBQ  $64, CX
	MOVOU (AX), X0 // x^575 (for the first 8 bytes), x^511 (the last 8)
	CMPQ  CX, $64
	JB    fold4

loop64:
	MOVOA X1, X5
	MOVOA X2, X6
	MOVOA X3, X7
	MOVOA X4, X8
	PCLMULQDQ $0x00, X0, X1
	PCLMULQDQ $0x00, X0, X2
	PCLMULQDQ $0x00, X0, X3
	PCLMULQDQ $0x00, X0, X4
	MOVOU (SI), X11
	MOVOU 16(SI), X12
	MOVOU 32(SI), X13
	MOVOU 48(SI), X14
	PCLMULQDQ $0x11, X0, X5
	PCLMULQDQ $0x11, X0, X6
	PCLMULQDQ $0x11, X0, X7
	PCLMULQDQ $0x11, X0, X8
	PXOR X5, X1
	PXOR X6, X2
	PXOR X7, X3
	PXOR X8, X4
	PXOR X11, X1
	PXOR X12, X2
	PXOR X13, X3
	PXOR X14, X4
	ADDQ $64, SI
	SUBQ $64, CX
	CMPQ CX, $64
	JAE  loop64

fold4:
	// Into one block: each folded 16 bytes on into the next.
	MOVOU 16(AX), X0 // x^191, x^127
	MOVOA X1, X5
	PCLMULQDQ $0x00, X0, X1
	PCLMULQDQ $0x11, X0, X5
	PXOR X5, X1
	PXOR X2, X1
	MOVOA X1, X5
	PCLMULQDQ $0x00, X0, X1
	PCLMULQDQ $0x11, X0, X5
	PXOR X5, X1
	PXOR X3, X1
	MOVOA X1, X5
	PCLMULQDQ $0x00, X0, X1
	PCLMULQDQ $0x11, X0, X5
	PXOR X5, X1
	PXOR X4, X1

loop16:
	CMPQ CX, $16
	JB   done
	MOVOU (SI), X2
	MOVOA X1, X5
	PCLMULQDQ $0x00, X0, X1
	PCLMULQDQ $0x11, X0, X5
	PXOR X5, X1
	PXOR X2, X1
	ADDQ $16, SI
	SUBQ $16, CX
	JMP  loop16

done:
	MOVQ   X1, AX
	PSRLDQ $8, X1
	MOVQ   X1, BX
	MOVQ   AX, lo+40(FP)
	MOVQ   BX, hi+48(FP)
	RET
